#!/usr/bin/env python3
"""An RTSP camera for the field-loop tests: GStreamer's RTSP server (Debian's
gir1.2-gst-rtsp-server-1.0, installed by scripts/setup.sh) streams an H.264 MP4 at its own
frame rate as rtsp://127.0.0.1:PORT/field, each client from the clip's start.

    python3 tests/support/rtsp_server.py PORT CLIP.mp4

Prints "ready" once listening; runs until killed (the tests kill it to cut the stream).
"""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    port, clip = sys.argv[1], sys.argv[2]
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    # The file's own H.264 packetised as it is (no re-encoding); SPS/PPS with every key frame.
    factory.set_launch(f'( filesrc location="{clip}" ! qtdemux ! rtph264pay name=pay0 pt=96 config-interval=-1 )')
    server.get_mount_points().add_factory("/field", factory)
    if server.attach(None) == 0:
        sys.exit(f"rtsp_server: cannot listen on 127.0.0.1:{port}")
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
