<#
.SYNOPSIS
  Installs tunneld as a Windows service, sets its failure actions and starts it.

.DESCRIPTION
  Creates %ProgramData%\tunneld (config, state, logs) readable by SYSTEM and
  Administrators only, registers the service (LocalSystem, delayed automatic
  start, restart on failure) and starts it. Run from an elevated PowerShell:

    powershell -ExecutionPolicy Bypass -File install.ps1 -BinaryPath C:\path\to\tunneld.exe

.PARAMETER BinaryPath
  tunneld.exe to run. Default: $env:ProgramFiles\tunneld\tunneld.exe

.PARAMETER ConfigPath
  Configuration file passed with --config. Default: $env:ProgramData\tunneld\tunneld.toml

.PARAMETER NoStart
  Register the service without starting it.
#>
#Requires -RunAsAdministrator
[CmdletBinding()]
param(
    [string]$BinaryPath = (Join-Path $env:ProgramFiles 'tunneld\tunneld.exe'),
    [string]$ConfigPath = (Join-Path $env:ProgramData 'tunneld\tunneld.toml'),
    [string]$ServiceName = 'tunneld',
    [switch]$NoStart
)

$ErrorActionPreference = 'Stop'

function Invoke-Sc {
    # sc.exe reports failure through its exit code only.
    & sc.exe @args | Out-Host
    if ($LASTEXITCODE -ne 0) {
        throw "sc.exe $($args -join ' ') failed with exit code $LASTEXITCODE"
    }
}

if (-not (Test-Path -LiteralPath $BinaryPath -PathType Leaf)) {
    throw "tunneld.exe not found at '$BinaryPath': build it or pass -BinaryPath"
}
$BinaryPath = (Resolve-Path -LiteralPath $BinaryPath).Path

if (Get-Service -Name $ServiceName -ErrorAction SilentlyContinue) {
    throw "service '$ServiceName' already exists: run uninstall.ps1 first"
}

# Data directories. Session state holds client tokens and the config may name
# token files, so nobody but SYSTEM and Administrators may read them. Well-known
# SIDs, not names: the group is called differently on localised Windows.
#   S-1-5-18     LocalSystem (the service account)
#   S-1-5-32-544 BUILTIN\Administrators
$dataDir = Join-Path $env:ProgramData 'tunneld'
foreach ($dir in @($dataDir, (Join-Path $dataDir 'state'), (Join-Path $dataDir 'logs'))) {
    New-Item -ItemType Directory -Force -Path $dir | Out-Null
}
& icacls.exe $dataDir /inheritance:r /grant:r '*S-1-5-18:(OI)(CI)F' '*S-1-5-32-544:(OI)(CI)F' /T /Q |
    Out-Host
if ($LASTEXITCODE -ne 0) { throw "icacls.exe failed on '$dataDir' with exit code $LASTEXITCODE" }

# --service: tunneld.exe hands control to the service control manager
# (run_windows_service in win_service.cpp) instead of running in the console.
$command = "`"$BinaryPath`" --service --config `"$ConfigPath`""
New-Service -Name $ServiceName `
    -BinaryPathName $command `
    -DisplayName 'tunneld secure tunneling daemon' `
    -Description 'Hosts the secure tunnel sessions of this machine; control it with tunnelctl.' `
    -StartupType Automatic | Out-Null

# Delayed start: the Windows counterpart of After=network-online.target.
Invoke-Sc config $ServiceName start= delayed-auto
# Restart after 5 s, 5 s, then 30 s; forget past failures after a day.
Invoke-Sc failure $ServiceName reset= 86400 actions= restart/5000/restart/5000/restart/30000
# Also apply the failure actions when tunneld stops by itself with a non-zero
# exit code, not only when the process crashes.
Invoke-Sc failureflag $ServiceName 1

if (-not $NoStart) {
    Start-Service -Name $ServiceName
    Get-Service -Name $ServiceName | Format-Table -AutoSize Name, Status, StartType
}
Write-Host "Installed $ServiceName. Logs: $(Join-Path $dataDir 'logs\tunneld.log')"
