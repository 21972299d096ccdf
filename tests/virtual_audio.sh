#!/usr/bin/env bash
# Virtual sound devices for the audio tests on a Linux machine without a sound card.
#
# A private PulseAudio daemon (user mode, no D-Bus, anonymous socket) with two null sinks:
#   app_out          the application's default speaker
#   app_in           the tests play into it; its monitor, app_in.monitor, is the
#                    application's default microphone
# sounddevice (PortAudio) reaches the daemon through ALSA's pulse plugin ("default").
#
#   virtual_audio.sh start    install what is missing (Debian, as root), start (idempotent),
#                             print `export PULSE_SERVER=...` on stdout for eval
#   virtual_audio.sh stop     stop what this script started
#   virtual_audio.sh status   exit 0 when running
#   virtual_audio.sh env      print the export line
#
# VA_DIR (default /tmp/moshi-virtual-audio) holds the socket, logs and pid files, so a
# second VA_DIR gives a second, independent pair of devices. VA_RATE (24000),
# VA_CHANNELS (1). VA_KEEPALIVE_MS (20, 0 = none): a low-latency reader on each monitor;
# without it an idle null sink renders in 2 s blocks and a stream opened later stalls.
set -euo pipefail

VA_DIR="${VA_DIR:-/tmp/moshi-virtual-audio}"
VA_RATE="${VA_RATE:-24000}"
VA_CHANNELS="${VA_CHANNELS:-1}"
VA_KEEPALIVE_MS="${VA_KEEPALIVE_MS:-20}"
SOCKET="$VA_DIR/pulse/native"
PACKAGES=(pulseaudio pulseaudio-utils libasound2-plugins libportaudio2)

say() { echo "virtual_audio: $*" >&2; }

with_client_env() { env -u PULSE_SINK -u PULSE_SOURCE PULSE_SERVER="unix:$SOCKET" "$@"; }

# running PID-FILE NAME: the process in PID-FILE is alive, not a zombie, and is NAME
running() {
    local pid
    [ -s "$1" ] || return 1
    pid="$(cat "$1")"
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] || return 1
    ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$pid/stat" 2>/dev/null
}

daemon_up() {
    running "$VA_DIR/pulseaudio.pid" pulseaudio \
        && with_client_env timeout 5 pactl info >/dev/null 2>&1
}

install_missing() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        say "missing: ${missing[*]} (install them with your package manager)"
        return 1
    fi
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1 || apt-get update -qq </dev/null >&2
    apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >&2 \
        || { apt-get update -qq </dev/null >&2 \
             && apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >&2; }
}

start_keepalives() {
    [ "$VA_KEEPALIVE_MS" -gt 0 ] 2>/dev/null || return 0
    local sink
    for sink in app_out app_in; do
        running "$VA_DIR/keepalive-$sink.pid" parec && continue
        with_client_env parec --latency-msec="$VA_KEEPALIVE_MS" --device="$sink.monitor" \
            --rate="$VA_RATE" --channels="$VA_CHANNELS" \
            </dev/null >/dev/null 2>>"$VA_DIR/keepalive.log" &
        echo $! >"$VA_DIR/keepalive-$sink.pid"
    done
}

print_env() { echo "export PULSE_SERVER=unix:$SOCKET"; }

start() {
    install_missing
    if daemon_up; then
        start_keepalives
        print_env
        return 0
    fi
    stop >/dev/null 2>&1 || true
    mkdir -p "$VA_DIR/pulse" "$VA_DIR/home"
    chmod 700 "$VA_DIR" "$VA_DIR/pulse"
    cat >"$VA_DIR/default.pa" <<EOF
load-module module-native-protocol-unix auth-anonymous=1 socket=$SOCKET
load-module module-null-sink sink_name=app_out rate=$VA_RATE channels=$VA_CHANNELS sink_properties=device.description=app_out
load-module module-null-sink sink_name=app_in rate=$VA_RATE channels=$VA_CHANNELS sink_properties=device.description=app_in
set-default-sink app_out
set-default-source app_in.monitor
EOF
    rm -f "$SOCKET"
    (
        export HOME="$VA_DIR/home" XDG_RUNTIME_DIR="$VA_DIR" XDG_CONFIG_HOME="$VA_DIR/home/.config"
        unset DBUS_SESSION_BUS_ADDRESS DISPLAY
        exec pulseaudio -n -F "$VA_DIR/default.pa" --daemonize=no --exit-idle-time=-1 \
            --use-pid-file=no --realtime=no --high-priority=no --disallow-exit \
            --log-target="file:$VA_DIR/pulseaudio.log" </dev/null >>"$VA_DIR/pulseaudio.out" 2>&1
    ) &
    echo $! >"$VA_DIR/pulseaudio.pid"
    local tries
    for tries in $(seq 50); do
        daemon_up && break
        if ! kill -0 "$(cat "$VA_DIR/pulseaudio.pid")" 2>/dev/null; then
            say "pulseaudio exited:"
            cat "$VA_DIR/pulseaudio.log" "$VA_DIR/pulseaudio.out" >&2 2>/dev/null || true
            return 1
        fi
        sleep 0.2
    done
    daemon_up || { say "pulseaudio did not come up (log: $VA_DIR/pulseaudio.log)"; return 1; }
    start_keepalives
    say "started (socket $SOCKET)"
    print_env
}

stop_one() {  # PID-FILE NAME
    local pid tries
    if running "$1" "$2"; then
        pid="$(cat "$1")"
        kill "$pid" 2>/dev/null || true
        for tries in $(seq 25); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$1"
}

stop() {
    stop_one "$VA_DIR/keepalive-app_out.pid" parec
    stop_one "$VA_DIR/keepalive-app_in.pid" parec
    stop_one "$VA_DIR/pulseaudio.pid" pulseaudio
    rm -f "$SOCKET"
    say "stopped"
}

status() {
    if daemon_up; then
        say "running (socket $SOCKET)"
        with_client_env pactl list short sinks >&2
        return 0
    fi
    say "not running"
    return 1
}

case "${1:-}" in
    start | stop | status) "$1" ;;
    env) print_env ;;
    *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
