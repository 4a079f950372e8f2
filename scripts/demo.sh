#!/usr/bin/env bash
# The embedded demo at this stage: start every service on loopback, replay the toy domain's sample
# episodes through toolenv (tool calls + checker rewards), check the domains' checkers, show the
# services, stop them.
set -euo pipefail
cd "$(dirname "$0")/.."
eigenloop=.venv/bin/eigenloop
$eigenloop down >/dev/null 2>&1 || true
$eigenloop up
trap '$eigenloop down' EXIT
$eigenloop env domains
$eigenloop env describe toy
$eigenloop env episode --domain toy
$eigenloop domains check telecom
$eigenloop user-sim replay --domain telecom
$eigenloop status
