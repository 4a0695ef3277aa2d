<#
.SYNOPSIS
  Stops and removes the tunneld Windows service.

.DESCRIPTION
  Stops the service (a graceful stop: every session resets its stream and
  closes its WebSocket) and deletes it. %ProgramData%\tunneld (configuration,
  persisted sessions with their client tokens, logs) is kept unless -Purge is
  given. Run from an elevated PowerShell.

.PARAMETER Purge
  Also delete %ProgramData%\tunneld.
#>
#Requires -RunAsAdministrator
[CmdletBinding()]
param(
    [string]$ServiceName = 'tunneld',
    [switch]$Purge
)

$ErrorActionPreference = 'Stop'

$service = Get-Service -Name $ServiceName -ErrorAction SilentlyContinue
if ($service) {
    if ($service.Status -ne 'Stopped') {
        Stop-Service -Name $ServiceName
        $service.WaitForStatus('Stopped', [TimeSpan]::FromSeconds(30))
    }
    # Remove-Service needs PowerShell 6; sc.exe works in Windows PowerShell 5.1 too.
    & sc.exe delete $ServiceName | Out-Host
    if ($LASTEXITCODE -ne 0) { throw "sc.exe delete $ServiceName failed with exit code $LASTEXITCODE" }
} else {
    Write-Host "service '$ServiceName' is not installed"
}

if ($Purge) {
    $dataDir = Join-Path $env:ProgramData 'tunneld'
    if (Test-Path -LiteralPath $dataDir) {
        Remove-Item -LiteralPath $dataDir -Recurse -Force
        Write-Host "removed $dataDir"
    }
}
