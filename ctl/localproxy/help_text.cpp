#include "cli.h"

#ifndef TUNNELD_VERSION
#define TUNNELD_VERSION "unknown"
#endif

namespace tunnel::localproxy {

std::string help_text() {
  return R"(Usage: localproxy [options]

Runs one end of a secure tunnel: in source mode it accepts local TCP clients
and carries them through the tunneling service; in destination mode it
connects what arrives through the tunnel to a local service.

  localproxy -r us-east-1 -s 5000          # source: listen on localhost:5000
  localproxy -r us-east-1 -d 22            # destination: forward to localhost:22
  localproxy -r us-east-1 -s SSH1=5555,HTTP1=8080        # several services
  localproxy -r us-east-1 -d SSH1=22,HTTP1=127.0.0.1:80
  (with the access token in AWSIOT_TUNNEL_ACCESS_TOKEN)

Options:
  -h, --help                       show this help and exit
  -V, --version                    show the version and exit
  -t, --access-token TOKEN         access token from OpenTunnel; prefer the
                                   AWSIOT_TUNNEL_ACCESS_TOKEN variable: argv is
                                   visible to other users
  -i, --client-token TOKEN         client token (32..128 of [A-Za-z0-9-]) to
                                   reconnect with; default: a fresh one
  -e, --proxy-endpoint ENDPOINT    service endpoint: HOST[:PORT], wss://HOST[:PORT],
                                   or ws://HOST[:PORT] on loopback only
  -r, --region REGION              region of the tunnel (e.g. us-east-1);
                                   excludes -e
  -s, --source-listen-port [ADDRESS:]PORT | NAME=[ADDRESS:]PORT,...
                                   source mode: listen here (0 = any free
                                   port); one mapping per service (up to 3)
  -d, --destination-app [HOST:]PORT | NAME=[HOST:]PORT,...
                                   destination mode: connect here (HOST
                                   defaults to localhost); one per service
      --config-dir DIR             service mappings from the files of DIR,
                                   lines NAME = [ADDRESS:]PORT (with -s/-d
                                   or -m; the command line wins per name)
  -m, --mode MODE                  source|src|destination|dst; must agree with
                                   -s/-d
  -b, --local-bind-address ADDRESS source: listen address (default: settings'
                                   default_bind_address); destination: local
                                   address for outgoing connections
  -c, --capath DIR                 extra directory of hashed CA certificates
      --cafile FILE                extra PEM bundle of CA certificates
  -k, --no-ssl-host-verify         do not verify the service's certificate
                                   (testing only)
  -y, --destination-client-type V1|V2|V3
                                   source mode: speak only this protocol
                                   version (default: offer V3, V2 and V1 and
                                   detect what the destination speaks)
  -v, --verbose LEVEL              0 off, 1 fatal, 2 error, 3 warning, 4 info
                                   (default), 5 debug, 6 trace (0..255)
      --config FILE                read options from FILE: 'name = value' lines
                                   with long option names; # or ; comments
      --settings-json FILE         fine-grained settings (JSON) over the defaults
      --export-default-settings FILE
                                   write the default settings as JSON and exit
      --https-proxy URL            reach the service through this HTTP CONNECT
                                   proxy: http://[user:password@]host[:port]
                                   (port 80 by default), or 'direct' for none;
                                   default: HTTPS_PROXY, then https_proxy, unless
                                   NO_PROXY/no_proxy matches the service host.
                                   Credentials on argv are visible to other
                                   users: prefer HTTPS_PROXY or a 0600 file

Precedence: command line > --config file > environment (AWSIOT_TUNNEL_ACCESS_TOKEN,
AWSIOT_TUNNEL_CLIENT_TOKEN, AWSIOT_TUNNEL_ENDPOINT, AWSIOT_TUNNEL_REGION); for the
proxy: --https-proxy > settings' tunneling.proxy.https_proxy > HTTPS_PROXY.
Exit status: 0 tunnel closed or stopped by a signal, 1 runtime failure, 2 usage error.
)";
}

std::string version_text() { return std::string("localproxy (tunneld) ") + TUNNELD_VERSION + "\n"; }

}  // namespace tunnel::localproxy
