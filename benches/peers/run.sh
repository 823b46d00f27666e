#!/bin/sh
# silt side by side with VictoriaMetrics and InfluxDB (issue #9): installs the peers from Debian's packages,
# builds silt and the load generator in release mode, and runs `cargo bench --bench peers`, which starts each
# server on loopback with a fresh data directory, feeds it, and writes target/peers/results.md.
#
# Usage: benches/peers/run.sh            (one day at 60 s: 152 M samples, ~15 minutes on 2 cores)
#        PEERS_STEPS=200 benches/peers/run.sh   (21 M samples)
# See benches/peers/main.rs for every PEERS_* setting.
set -eu
cd "$(dirname "$0")/../.."
if ! command -v victoria-metrics >/dev/null || ! command -v influxd >/dev/null; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y victoria-metrics influxdb
fi
# The packages' own services are not used (the bench starts its own servers on free loopback ports).
cargo build --release --bin silt
cargo bench --bench peers
