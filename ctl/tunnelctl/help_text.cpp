#include "help_text.h"

#include "control/control_codec.h"

#ifndef TUNNELD_VERSION
#define TUNNELD_VERSION "unknown"
#endif

namespace tunnel::tunnelctl {

namespace pb = tunneld::control;

std::string help_text() {
  return R"(Usage: tunnelctl [--socket PATH] [--timeout SECONDS] [--json] COMMAND [ARGS]

Controls tunneld, the secure tunneling daemon, over its control socket.

Commands:
  open (-s [HOST:]PORT | -d [HOST:]PORT) [options]
                          open a tunnel session; prints its id (and, for a
                          source, the port it listens on)
  list                    show every session
  status ID|NAME          show one session in detail
  status                  show the MQTT notify link (docs/notify.md)
  close ID|NAME           close a session (and forget it across restarts)
  version                 show the versions of tunnelctl, tunneld and the
                          control protocol
  help                    show this help

Global options:
  --socket PATH           control socket (default: $TUNNELD_SOCKET, else
                          /run/tunneld/control.sock)
  --timeout SECONDS       give up waiting for tunneld after this (default 10)
  --json                  print JSON instead of text (open, list, status,
                          close, version)
  -h, --help              show this help
  -V, --version           show tunnelctl's version without asking tunneld

Options of open (the localproxy spellings work too):
  -m, --mode MODE         source (src) or dest (destination, dst); optional,
                          must agree with -s/-d
  -s, --listen [HOST:]PORT
                          source: accept local clients here (0 = any free port)
  -d, --target [HOST:]PORT
                          destination: connect here (HOST defaults to localhost)
  -s/-d NAME=[HOST:]PORT,...
      --service NAME=[HOST:]PORT
                          several services (V2/V3, at most 3): one mapping
                          each; --service is repeatable and needs --mode
  -y, --protocol V1|V2|V3 speak only this version (default: offer V3, V2, V1
                          and detect what the peer speaks)
  -r, --region REGION     region of the tunnel (e.g. us-east-1); or set
                          AWSIOT_TUNNEL_REGION
  -e, --endpoint ENDPOINT service endpoint HOST[:PORT] or wss://HOST[:PORT];
                          or set AWSIOT_TUNNEL_ENDPOINT. Excludes -r
  -b, --bind-address ADDR source: listen address; destination: local address
                          of outgoing connections
  -c, --capath DIR        extra directory of hashed CA certificates
      --cafile FILE       extra PEM bundle of CA certificates
  -k, --no-ssl-host-verify
                          do not verify the service's certificate (testing)
      --settings-json FILE
                          fine-grained settings (JSON); the contents are sent
  -i, --client-token TOKEN
                          client token to reconnect with (or set
                          AWSIOT_TUNNEL_CLIENT_TOKEN); default: tunneld makes one
      --https-proxy URL   reach the service through this HTTP CONNECT proxy,
                          http://[user:password@]host[:port], or 'direct';
                          default: tunneld's settings, then its HTTPS_PROXY
                          and NO_PROXY. Credentials here show in process
                          listings: prefer a --settings-json file
      --name NAME         a name to use instead of the id
      --access-token-file FILE|-
                          read the access token from FILE (mode 0600) or,
                          with -, from standard input

The access token is never taken from the command line. It comes from
--access-token-file, else AWSIOT_TUNNEL_ACCESS_TOKEN, else one line of standard
input when that is not a terminal.

Exit status: 0 ok, 1 tunneld refused the request, 2 usage error, 3 tunneld
not running or not answering, 4 permission denied, 5 no such session,
6 protocol or version mismatch. See docs/tunnelctl.md.
)";
}

std::string version_text() {
  return std::string("tunnelctl ") + TUNNELD_VERSION + " (control protocol " +
         std::to_string(pb::kProtocolVersion) + ")\n";
}

}  // namespace tunnel::tunnelctl
