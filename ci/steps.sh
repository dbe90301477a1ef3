# Sourced by ci/setup.sh and ci/install-tools.sh: one line per set-up step (issue 18).
#
#   step LOG WHAT COMMAND...   run COMMAND with all its output in the file LOG; print one line
#                              "<prefix>: WHAT: done in N s (log LOG)"; a progress line every
#                              30 s while it runs (with the elapsed time); on failure the
#                              last 40 lines of LOG and exit with the command's code.
#   done_line WHAT STARTED     the one line for a step that needed no work (STARTED = now_ms).
#
# Callers set STEP_PREFIX (e.g. "setup"). Lines go to stderr; stdout stays free for values.
# STEP_PROGRESS_SEC (default 30) is the interval of the progress lines.

STEP_PREFIX="${STEP_PREFIX:-setup}"
STEP_PROGRESS_SEC="${STEP_PROGRESS_SEC:-30}"

now_ms() { # milliseconds since the epoch (bash 5's EPOCHREALTIME, else date)
  if [ -n "${EPOCHREALTIME:-}" ]; then
    local t="${EPOCHREALTIME/[.,]/}"
    printf '%s\n' "${t:0:${#t}-3}"
  else
    printf '%s\n' "$(($(date +%s) * 1000))"
  fi
}

seconds_since() { # STARTED_MS → "1.2 s"
  local ms=$(($(now_ms) - $1))
  printf '%d.%d s' $((ms / 1000)) $((ms % 1000 / 100))
}

say() { printf '%s: %s\n' "$STEP_PREFIX" "$*" >&2; }

done_line() { say "$1 ($(seconds_since "$2"))"; }

step() {
  local log="$1" what="$2"
  shift 2
  local started pid rc=0 next="$STEP_PROGRESS_SEC"
  started="$(now_ms)"
  mkdir -p "$(dirname "$log")"
  "$@" >"$log" 2>&1 </dev/null &
  pid=$!
  # A Ctrl-C or a CI cancellation ends the step's command too (background jobs ignore SIGINT).
  trap 'kill "$pid" 2>/dev/null; exit 130' INT TERM
  while kill -0 "$pid" 2>/dev/null; do
    sleep 0.2
    if [ $((($(now_ms) - started) / 1000)) -ge "$next" ]; then
      say "$what: still running, $next s so far (log $log)"
      next=$((next + STEP_PROGRESS_SEC))
    fi
  done
  wait "$pid" || rc=$?
  trap - INT TERM
  if [ "$rc" -ne 0 ]; then
    say "$what: FAILED (exit $rc) after $(seconds_since "$started"); last lines of $log:"
    tail -n 40 "$log" | sed 's/^/  | /' >&2
    exit "$rc"
  fi
  say "$what: done in $(seconds_since "$started") (log $log)"
}
