#!/usr/bin/env bash
# Installs the .deb on this machine and checks it end to end, then purges it: files in place,
# the conffile registered, the `fieldkit` user (in dialout) owning /var/lib/fieldkit/models; the
# service started as its unit says (systemctl where systemd runs; elsewhere, e.g. a CI container,
# the unit's ExecStart as the unit's User), health, a model loaded over HTTP from the model
# directory and a prediction; SIGTERM drains and exits 0; purge removes it all.
#   sudo bash scripts/test-deb.sh dist/fieldkit_<version>_<arch>.deb
# Needs root, and refuses to touch a machine where fieldkit is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
deb="$1"
[ "$(id -u)" = 0 ] || { echo "test-deb: needs root (it installs the package)" >&2; exit 2; }
if dpkg-query -W -f='${Status}' fieldkit 2>/dev/null | grep -q "ok installed"; then
  echo "test-deb: fieldkit is already installed here; not touching it" >&2; exit 2
fi
fail() { echo "test-deb: FAILED: $*" >&2; exit 1; }
dpkg -i "$deb" > /dev/null
cleanup() {
  [ -n "${pid:-}" ] && kill -KILL "$pid" 2> /dev/null
  dpkg --purge fieldkit > /dev/null 2>&1 || true
}
trap cleanup EXIT
for f in /usr/bin/fieldkit /etc/fieldkit/serve.toml /lib/systemd/system/fieldkit-serve.service \
         /lib/udev/rules.d/60-fieldkit-serial.rules /usr/share/doc/fieldkit/copyright; do
  [ -e "$f" ] || fail "$f not installed"
done
dpkg-query -W -f='${Conffiles}' fieldkit | grep -q /etc/fieldkit/serve.toml || fail "serve.toml is not a conffile"
getent passwd fieldkit > /dev/null || fail "no fieldkit user"
if getent group dialout > /dev/null; then id -nG fieldkit | grep -qw dialout || fail "fieldkit not in dialout"; fi
[ "$(stat -c %U /var/lib/fieldkit/models)" = fieldkit ] || fail "/var/lib/fieldkit/models not owned by fieldkit"
/usr/bin/fieldkit --version

unit=/lib/systemd/system/fieldkit-serve.service
cp runtime/tests/golden/tiny_classifier.onnx /var/lib/fieldkit/models/cls.onnx
cp runtime/tests/fixtures/tiny_classifier.card.json /var/lib/fieldkit/models/cls.json
chown fieldkit:fieldkit /var/lib/fieldkit/models/cls.*
if [ -d /run/systemd/system ]; then
  how="systemd"
  systemctl restart fieldkit-serve
  url=http://127.0.0.1:8080
else
  how="the unit's ExecStart as its User (no systemd here)"
  user="$(sed -n 's/^User=//p' "$unit")"
  read -r -a exec_start <<< "$(sed -n 's/^ExecStart=//p' "$unit")"
  # The configured port may be taken on a shared machine: flags override serve.toml.
  port=18439; url="http://127.0.0.1:$port"
  log="$(mktemp)"
  # setpriv execs the daemon itself (as systemd does), so the SIGTERM reaches it directly.
  setpriv --reuid="$user" --regid="$user" --init-groups env FIELDKIT_LOG=info "${exec_start[@]}" --bind "127.0.0.1:$port" 2> "$log" &
  pid=$!
fi
for _ in $(seq 100); do curl -sf "$url/v2/health/live" > /dev/null && break; sleep 0.1; done
curl -sf "$url/v2/health/live" > /dev/null || { [ -n "${log:-}" ] && cat "$log"; fail "the service did not start ($how)"; }
# The packaged config serves nothing yet: not ready until a model is loaded.
[ "$(curl -s -o /dev/null -w '%{http_code}' "$url/v2/health/ready")" = 503 ] || fail "ready without a model"
curl -sf -X POST "$url/v1/models" -H 'Content-Type: application/json' -d '{"name": "cls", "path": "cls.onnx"}' > /dev/null \
  || fail "loading a model from /var/lib/fieldkit/models"
curl -sf "$url/v2/health/ready" > /dev/null || fail "not ready with a model loaded"
img="$(find assets/data/sesame-mini/images -name '*.jpg' | sort | head -n 1)"
answer="$(curl -sf --data-binary "@$img" -H 'Content-Type: image/jpeg' "$url/v1/models/cls/predict")" || fail "predict"
echo "$answer" | grep -q '"classes"' || fail "predict answered $answer"
if [ -n "${pid:-}" ]; then
  kill -TERM "$pid" || { cat "$log"; fail "the daemon was gone before SIGTERM"; }
  wait "$pid" || fail "the daemon exited $? after SIGTERM"
  pid=""
  grep -q stopped "$log" || fail "no drained stop in the log"
else
  systemctl stop fieldkit-serve
fi
dpkg --purge fieldkit > /dev/null
trap - EXIT
for f in /usr/bin/fieldkit /etc/fieldkit/serve.toml /var/lib/fieldkit; do
  [ ! -e "$f" ] || fail "$f left after purge"
done
echo "test-deb: $(basename "$deb") installed, served ($how), drained, purged: ok"
