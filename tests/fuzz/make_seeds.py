#!/usr/bin/env python3
"""Writes the seed corpora under tests/fuzz/corpus/<target>/ (except
record_decoder's, kept as committed). Each seed is a small, meaningful input
in the format the target's header comment describes. Re-run after changing a
target's input format: python3 tests/fuzz/make_seeds.py"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- protobuf, by hand (varint and length-delimited fields only) ---
def varint(n):
    n &= (1 << 64) - 1
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def fv(num, n):
    return varint(num << 3) + varint(n)


def fb(num, data):
    if isinstance(data, str):
        data = data.encode()
    return varint((num << 3) | 2) + varint(len(data)) + data


def frame(body):
    return struct.pack(">I", len(body)) + body


def record(body):
    return struct.pack(">H", len(body)) + body


# --- control: byte 0 = role (bit 0: responses) and cap, byte 1 = feed step ---
req = lambda rid, body: fv(1, 1) + fv(2, rid) + body
open_req = (fb(1, "web") + fv(2, 2) + fb(3, "8080") + fb(6, "wss://relay.example.com")
            + fb(8, "AcCeSsToKeN-fuzz-7f3a9c1e5b2d8046"))
open_multi = (fb(1, "multi") + fv(2, 1) + fb(7, "us-east-1") + fb(8, "AcCeSsToKeN-fuzz-7f3a9c1e5b2d8046"))
write("control", "list", b"\x02\x03" + frame(req(1, fb(11, b""))))
write("control", "version_status_close", b"\x02\x00" + frame(req(2, fb(14, b""))) +
      frame(req(3, fb(12, fb(1, "web")))) + frame(req(4, fb(13, fb(1, "s1")))))
write("control", "open_destination", b"\x02\x07" + frame(req(5, fb(10, open_req))))
write("control", "open_bad_version", b"\x02\x10" + frame(fv(1, 99) + fv(2, 6) + fb(11, b"")))
write("control", "too_long", b"\x00\x01" + b"\xff\xff\xff\xff")
session = (fb(1, "s1") + fb(2, "web") + fv(3, 2))
write("control", "response_list", b"\x13\x05" + frame(fv(1, 1) + fv(2, 1) + fv(3, 1) + fb(11, fb(1, session))))
write("control", "response_error", b"\x03\x00" + frame(fv(1, 1) + fv(2, 1) + fv(3, 6) + fb(4, "no session s9")))
write("control", "response_version", b"\x57\x02" + frame(fv(1, 1) + fv(2, 1) + fv(3, 1) + fb(14, fb(1, "0.1.0") + fv(2, 1))))

# --- session_machine: cfg, limits, then steps (see the target) ---
# cfg: bit0 destination, bit1 link up at start, bits 2-3 service count,
# bits 4-5 version-1, bit 6 assume V3. lim: bit 7 full payload, bits 4-5 limit-1.
write("session_machine", "source_v1_accept_data_close",
      bytes([0x02, 0x80 | 0x10]) + bytes([4, 6, 0, 3, 1, 11, 8, 0]))
write("session_machine", "source_v3_two_connections",
      bytes([0x22 | 0x40, 0x30 | 0x08]) + bytes([4, 4, 6, 0, 2, 0, 1, 0x05, 7, 0, 5, 8, 0, 11]))
# destination, 2 services, V3: STREAM_START svc1 stream 1 conn 1, CONNECTION_START conn 2, DATA, resets
write("session_machine", "destination_v3_two_services",
      bytes([0x01 | 0x02 | 0x08 | 0x20, 0x30 | 0x10]) +
      bytes([0, 2, 0x81, 0x01 | 0x04, 0]) + bytes([0, 6, 0x00, 0x01 | 0x04, 1]) +
      bytes([0, 1, 0x00, 0x11 | 0x04, 1, 3]) + b"abc" + bytes([5, 0]) +
      bytes([0, 7, 0x00, 0x01 | 0x04, 1]) + bytes([0, 3, 0x00, 0x01]) + bytes([9, 10 | 0x20]))
write("session_machine", "destination_v2_service_ids",
      bytes([0x01 | 0x02 | 0x04 | 0x10, 0x80]) + bytes([0, 5, 0, 0x00, 4]) +
      bytes([0, 2, 0x81, 0x01]) + bytes([3, 8]) + record(fv(1, 1) + fv(2, 1) + fb(4, "x")[:0] + fb(4, "hi")))
write("session_machine", "raw_records",
      bytes([0x03, 0x80]) + bytes([3, 24]) + record(fv(1, 2) + fv(2, 1)) + record(fv(1, 1) + fv(2, 1) + fb(4, "hello"))
      + record(fv(1, 3) + fv(2, 1)) + bytes([9, 10]))

# --- settings_json ---
write("settings_json", "reference_export", """{
    "tunneling": {
        "proxy": {
            "default_bind_address": "localhost",
            "message": {"data_length_size": "2", "max_payload_size": "64512", "max_size": "65536"},
            "tcp": {"connection_retry_count": "5", "connection_retry_delay_ms": "1000",
                    "read_buffer_size": "131076", "max_simultaneous_connections": "128"},
            "websocket": {"ping_period_ms": "5000", "retry_delay_ms": "2500",
                          "connect_retry_count": "-1", "reconnect_on_data_error": "true",
                          "subprotocol": "aws.iot.securetunneling-3.0", "max_frame_size": "131076",
                          "write_buffer_size": "131076", "read_buffer_size": "131076",
                          "pong_timeout_ms": "10000"}
        }
    }
}
""")
write("settings_json", "numbers_and_proxy",
      '{"tunneling":{"proxy":{"https_proxy":"http://user:secretpass@proxy.example:3128",'
      '"websocket":{"ping_period_ms":500,"reconnect_on_data_error":0}}}}')
write("settings_json", "bad_value", '{"tunneling":{"proxy":{"tcp":{"connection_retry_count":"abc"}}}}')
write("settings_json", "direct", '{"tunneling":{"proxy":{"https_proxy":" DIRECT "}}}')

# --- tunneld_config (token files src.token/dst.token exist next to it) ---
write("tunneld_config", "full", """state_dir = "/var/lib/tunneld"
[control]
socket = "/run/tunneld/control.sock"
mode = "0660"
group = "tunneld"
[log]
level = "warning"
target = "stderr"
[settings]
"websocket.ping_period_ms" = 500
[[session]]
name = "web"
mode = "destination"
target = "8080"
endpoint = "wss://relay.example.com"
access_token_file = "dst.token"
[[session]]
name = "ssh"
mode = "source"
services = { SSH1 = "0", HTTP1 = "127.0.0.1:0" }
region = "us-east-1"
protocol = "V3"
access_token_file = "src.token"
client_token_file = "dst.token"
""")
write("tunneld_config", "notify", """[notify]
broker = "broker.example.com:8883"
thing_name = "my-device"
cert_file = "device.pem"
key_file = "device.key"
ca_file = "ca.pem"
keepalive_s = 30
[notify.services]
SSH = "22"
""")
write("tunneld_config", "notify_443", """[notify]
broker = "a1-ats.iot.us-east-1.amazonaws.com:443"
thing_name = "my:device"
cert_file = "device.pem"
key_file = "device.key"
ca_file = "ca.pem"
alpn = "x-amzn-mqtt-ca"
max_sessions = 2
[notify.services]
SSH = "22"
HTTP = "127.0.0.1:8080"
""")
write("tunneld_config", "errors", "[control]\nmode = 660\n[[session]]\nname = \"x\"\nmode = \"sauce\"\n")

# --- CLIs: one argument per line, "=NAME=VALUE" env, "<LINE" stdin, @file, $T/$C secrets ---
write("localproxy_cli", "source_region", "-s\n5555\n-r\nus-east-1\n=AWSIOT_TUNNEL_ACCESS_TOKEN=$T")
write("localproxy_cli", "destination_v3",
      "-d\nSSH1=22,HTTP1=127.0.0.1:80\n-e\nwss://relay.example.com:443\n-y\nV3\n-i\n$C\n-v\n6\n=AWSIOT_TUNNEL_ACCESS_TOKEN=$T")
write("localproxy_cli", "settings_and_config",
      "--config\n@lp.conf\n--settings-json\n@settings.json\n-b\n127.0.0.1\n=AWSIOT_TUNNEL_ACCESS_TOKEN=$T")
write("localproxy_cli", "config_dir", "-s\n0\n--config-dir\n@services\n-e\nrelay:8443\n-t\n$T\n-k\n--cafile\n@ca.pem")
write("localproxy_cli", "export", "--export-default-settings\n@out.json\n--settings-json=@bad.json")
write("localproxy_cli", "help", "--help\n-s\nbad")
write("localproxy_cli", "proxy", "-s\n5555\n-r\nus-east-1\n--https-proxy\nhttp://u:p@proxy:3128\n=AWSIOT_TUNNEL_ACCESS_TOKEN=$T\n=NO_PROXY=.example.com")
write("tunnelctl_cli", "open_destination",
      "open\n--name\nweb\n-d\n8080\n-e\nwss://relay.example.com\n--access-token-file\n@token\n--json")
write("tunnelctl_cli", "open_stdin", "open\n-s\nSSH1=0\n-s\nHTTP1=0\n-r\nus-east-1\n--access-token-file\n-\n<$T")
write("tunnelctl_cli", "open_env", "--socket\n@sock\nopen\n-s\n5555\n-r\neu-west-1\n--settings-json\n@settings.json\n-i\n$C\n=AWSIOT_TUNNEL_ACCESS_TOKEN=$T")
write("tunnelctl_cli", "list_status_close", "list\n--json\n--timeout\n3")
write("tunnelctl_cli", "status", "status\nweb\n=TUNNELD_SOCKET=@ctl.sock")
write("tunnelctl_cli", "close", "close\ns1")
# Found by fuzzing (an empty session argument was accepted); fixed.
write("tunnelctl_cli", "close_empty", "close\n")
write("tunnelctl_cli", "token_on_argv", "open\n-d\n22\n-r\nus-east-1\n-t\n$T")
write("tunnelctl_cli", "world_readable_token", "open\n-d\n22\n-r\nus-east-1\n--access-token-file\n@token-open")

# --- relay_handshake: handshakes separated by 0x1e ---
hs = lambda path, q, hdr, cookie, client, proto, act: "\n".join([path, q, hdr, cookie, client, proto, act])
write("relay_handshake", "source_then_reconnect",
      hs("/tunnel", "local-proxy-mode=source", "$S", "", "$C", "aws.iot.securetunneling-3.0", "\x01") + "\x1e" +
      hs("/tunnel", "local-proxy-mode=source", "$S", "", "$C", "aws.iot.securetunneling-2.0", "\x00") + "\x1e" +
      hs("/tunnel", "local-proxy-mode=source", "$S", "", "!", "aws.iot.securetunneling-1.0", "\x00"))
write("relay_handshake", "cookie_destination_close",
      hs("/tunnel", "local-proxy-mode=destination", "!", "a=b; awsiot-tunnel-token=$d", "!",
         "foo, aws.iot.securetunneling-1.0", "\x02") + "\x1e" +
      hs("/tunnel", "local-proxy-mode=destination", "!", "awsiot-tunnel-token=\"$d\"", "!",
         "aws.iot.securetunneling-1.0", "\x00"))
write("relay_handshake", "wrong_mode", hs("/tunnel", "x=1&local-proxy-mode=destination", "$S", "", "!",
                                          "aws.iot.securetunneling-3.0", ""))

# --- admin_api ---
def http(method, target, body=""):
    return f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n\r\n{body}"
write("admin_api", "open_list_get_delete",
      http("POST", "/tunnels", '{"services":["SSH","HTTP"],"lifetimeSeconds":3600}') +
      http("GET", "/tunnels") + http("GET", "/tunnels/t1") + http("DELETE", "/tunnels/t1/"))
write("admin_api", "thing", http("POST", "/tunnels?x=1", '{"services":["SSH"],"thingName":"my-device"}'))
write("admin_api", "expect_continue",
      "POST /tunnels HTTP/1.0\r\nExpect: 100-continue\r\ncontent-length: 2\r\n\r\n{}")
# Found by fuzzing (empty method and target were accepted); fixed.
write("admin_api", "empty_method", " /tunnels HTTP/1.1\r\n\r\nGET  HTTP/1.1\r\n\r\n")
write("admin_api", "chunked", "POST /tunnels HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
# The fake relay holds two open tunnels: the third POST gets 503.
write("admin_api", "full", http("POST", "/tunnels") * 3)

# --- http_heads: byte 0 = parser (0 upgrade, 1 CONNECT, 2 proxy URL, 3 NO_PROXY), byte 1 = step ---
write("http_heads", "upgrade_101",
      b"\x00\x10HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
      b"Sec-WebSocket-Protocol: aws.iot.securetunneling-3.0\r\nchannel-id: abc\r\n\r\n\x82\x00")
write("http_heads", "upgrade_401", b"\x00\x03HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
write("http_heads", "connect_200", b"\x01\x05HTTP/1.1 200 Connection established\r\nProxy-Agent: x\r\n\r\nTLS")
write("http_heads", "connect_407_lf", b"\x01\x40HTTP/1.0 407 Proxy Authentication Required\nProxy-Authenticate: Basic\n\n")
write("http_heads", "proxy_url", b"\x02\x00http://user%40corp:p@ss:word@proxy.example.com:3128/")
write("http_heads", "proxy_url_v6", b"\x02\x00[::1]:8080")
write("http_heads", "no_proxy", b"\x03\x00.example.com, 10.0.0.1:443 *.corp [::1]\nrelay.example.com")

# --- notify_message ---
write("notify_message", "ssh",
      '{"clientAccessToken":"AcCeSsToKeN-fuzz-7f3a9c1e5b2d8046","clientMode":"destination",'
      '"region":"us-east-1","services":["SSH"]}')
write("notify_message", "source_mode",
      '{"clientAccessToken":"AcCeSsToKeN-fuzz-7f3a9c1e5b2d8046","clientMode":"source",'
      '"region":"eu-west-1","services":["HTTP","VNC"]}')
write("notify_message", "three_services",
      '{"clientAccessToken":"AcCeSsToKeN-fuzz-7f3a9c1e5b2d8046","clientMode":"destination",'
      '"region":"us-east-1","services":["SSH","HTTP","VNC"]}')
write("notify_message", "unknown_service", '{"clientAccessToken":"short","region":"x","services":["FTP"]}')

# --- ws_frame: byte 0 bit 0 = server role (reads masked frames), byte 1 = step ---
write("ws_frame", "binary_unmasked", b"\x02\x03\x82\x05hello\x02\x02hi\x80\x01!")
write("ws_frame", "ping_close", b"\x02\x01\x89\x02ab\x88\x02\x03\xe8")
write("ws_frame", "masked_server", b"\x03\x04\x82\x83\x01\x02\x03\x04" + bytes(a ^ b for a, b in zip(b"abc", b"\x01\x02\x03")))
write("ws_frame", "len16", b"\x02\xff\x82\x7e\x01\x00" + b"x" * 256)
