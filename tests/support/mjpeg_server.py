#!/usr/bin/env python3
"""An MJPEG network camera for the field-loop tests, as mjpg-streamer and most IP cameras serve
one: `multipart/x-mixed-replace` JPEG frames over HTTP at a set rate, every client from the
first frame, any number of clients (ffprobe's probe is one, the stream another).

    python3 tests/support/mjpeg_server.py PORT FRAMES_DIR FPS

FRAMES_DIR holds the JPEG frames in name order. Serves http://127.0.0.1:PORT/stream.mjpg;
prints "ready" once listening and runs until killed. Standard library only.
"""
import http.server
import os
import sys
import time

BOUNDARY = "fieldkitframe"


def main() -> None:
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    port, folder, fps = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    frames = [open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder)) if n.endswith(".jpg")]
    if not frames:
        sys.exit(f"{folder}: no .jpg frames")

    class Camera(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            if self.path != "/stream.mjpg":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.end_headers()
            start = time.monotonic()
            try:
                for k, jpeg in enumerate(frames):
                    time.sleep(max(0.0, start + k / fps - time.monotonic()))
                    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                    self.wfile.write(head.encode() + jpeg + b"\r\n")
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Camera)
    server.daemon_threads = True
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
