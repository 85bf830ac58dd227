#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 600) each, seeded from the recorded fixtures, and
# prints executions and crashes per target. Needs cargo-fuzz (`cargo install cargo-fuzz`); the
# machine's stable toolchain is enough with RUSTC_BOOTSTRAP=1 (cargo-fuzz passes -Z flags).
#
#     bash fuzz/run.sh 600            # every target, 10 minutes each
#     bash fuzz/run.sh 60 chat_stream # one target, one minute
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-600}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(sse_decoder chat_stream responses_stream chat_json responses_json error_envelope waf_classifier inspect_path waf_headers proxy_config proxy_request retry_after request_lint check_input)
fi
export RUSTC_BOOTSTRAP=1
python3 seed.py
mkdir -p logs
printf '%-18s %12s %8s %s\n' target executions crashes corpus
for t in "${targets[@]}"; do
  log="logs/$t.log"
  status=0
  # No sanitizer: the crate forbids unsafe code, and ASan would slow the search threefold;
  # debug assertions (overflow checks) stay on.
  cargo fuzz run --sanitizer none "$t" "corpus/$t" -- -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 || status=$?
  execs=$(grep -a -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' | tail -1)
  crashes=$(ls "artifacts/$t" 2>/dev/null | grep -c '^crash-' || true)
  printf '%-18s %12s %8s %s\n' "$t" "${execs:-?}" "$crashes" "$(ls "corpus/$t" | wc -l) inputs"
  if [ "$status" -ne 0 ]; then
    echo "  $t exited $status: see fuzz/$log"
  fi
done
