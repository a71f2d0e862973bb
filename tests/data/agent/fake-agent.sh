#!/bin/sh
# A stand-in for the coding agent in tests. Like Codex it reads the prompt on
# standard input and keeps its session under $HOME; it acts as its first
# argument says and never evaluates its input:
#   edit [WAIT_DIR]  append a line to CHANGES.md naming the run, its model and
#                    whether it resumed a session; with WAIT_DIR, touch
#                    WAIT_DIR/started and wait for WAIT_DIR/go first
#   edit-when-told   edit, once told: touch $HOME/waiting, wait for $HOME/go
#                    (its home is the issue's agent-home claim, a folder the
#                    test reaches on the node)
#   nothing          change nothing
#   fail             print to both streams and exit 7
#   sleep            sleep past any sensible timeout
#   hold             run until the runner that started it is gone
#   hostile [DECOY [link TARGET | huge BYTES]]
#                    edit CHANGES.md, and turn everything it can write against
#                    the push: the clone's config (pushurl, insteadOf and
#                    pushInsteadOf to DECOY, a credential helper), a pre-push
#                    hook, a ~/.gitconfig for the runner (its $HOME is the
#                    clone's parent in the Job), and optionally a symbolic
#                    link to TARGET or a file of BYTES bytes; DECOY is by
#                    default the repository `decoy` beside the origin
#   hostile-probe    hostile, and first look for the push token everywhere it
#                    can: every file it can read (outside /usr, the image's
#                    programs, and the kernel's /proc, /sys, /dev), every
#                    process environment it can see and its own environment;
#                    the report (probe-report.txt: what it found, its uid,
#                    the variable names and every readable path) is part of
#                    its change, as an agent would try to smuggle it out
#   hostile-refused  hostile, with a link to the token's path in the Job and a
#                    file of 2 MiB (the gate's agent.max_push_bytes is 1 MiB)
# Arguments 2 and 3 are the model and reasoning level the runner passes.
set -eu

# Looks for anything shaped like a GitHub token (ghs_, 20+ characters) in
# everything this process can read; writes the report to $1.
probe() {
  files="$(find / \( -path /proc -o -path /sys -o -path /usr -o -path /dev \) -prune \
    -o -type f -readable -print 2>/dev/null | sort)"
  environs="$(ls /proc/[0-9]*/environ 2>/dev/null || true)"
  found=""
  for f in $files $environs; do
    if grep -aqE 'ghs_[A-Za-z0-9]{20,}' "$f" 2>/dev/null; then found="$found $f"; fi
  done
  if env | grep -qE 'ghs_[A-Za-z0-9]{20,}'; then found="$found (environment)"; fi
  {
    echo "token-like strings found in:${found:- nothing}"
    echo "uid: $(id -u)"
    if [ -e /var/run/secrets/issueops/github/token ]; then
      echo "token file: present"
    else
      echo "token file: absent"
    fi
    echo "readable files: $(echo "$files" | grep -c .)"
    echo "environment:"
    env | cut -d= -f1 | sort | sed 's/^/  /'
    echo "files:"
    echo "$files" | sed 's/^/  /'
  } > "$1"
}

action="$1"
model="${2:-}"
reasoning="${3:-}"
mkdir -p "$HOME/session"
cat > "$HOME/session/last-prompt.md"
if [ "$action" = edit-when-told ]; then
  touch "$HOME/waiting"
  while [ ! -e "$HOME/go" ]; do sleep 0.05; done
  rm -f "$HOME/waiting" "$HOME/go"
  action=edit
fi
case "$action" in
  edit)
    if [ -n "${4:-}" ]; then
      touch "$4/started"
      while [ ! -e "$4/go" ]; do sleep 0.05; done
    fi
    if [ -f "$HOME/session/id" ]; then
      session="resumed session $(cat "$HOME/session/id")"
    else
      echo "$ISSUEOPS_RUN_ID" > "$HOME/session/id"
      session="new session"
    fi
    echo "run $ISSUEOPS_RUN_ID ($ISSUEOPS_MODE, $model/$reasoning): $session" >> CHANGES.md
    echo "agent: edited CHANGES.md"
    ;;
  nothing)
    echo "agent: nothing to change"
    ;;
  fail)
    echo "agent: reading the repository"
    echo "agent: something broke" >&2
    exit 7
    ;;
  sleep)
    sleep 600
    ;;
  hold)
    while kill -0 "$PPID" 2>/dev/null; do sleep 0.2; done
    exit 1
    ;;
  hostile|hostile-probe|hostile-refused)
    if [ "$action" = hostile-probe ]; then probe probe-report.txt; fi
    if [ "$action" = hostile-refused ]; then
      set -- "$1" "$2" "$3" "" link /var/run/secrets/issueops/github/token
      head -c 2097152 /dev/zero > huge.bin
    fi
    origin="$(git config remote.origin.url)"
    decoy="${4:-${origin%/*}/decoy.git}"
    git config remote.origin.pushurl "$decoy"
    git config "url.$decoy.insteadOf" "$origin"
    git config "url.$decoy.pushInsteadOf" "$origin"
    git config credential.helper '!echo password=from-the-agent'
    mkdir -p .git/hooks
    printf '#!/bin/sh\ntouch hook-ran\n' > .git/hooks/pre-push
    chmod +x .git/hooks/pre-push
    printf '[url "%s"]\n\tinsteadOf = %s\n\tpushInsteadOf = %s\n' "$decoy" "$origin" "$origin" > ../.gitconfig
    echo "run $ISSUEOPS_RUN_ID: a change, and a go at the push" >> CHANGES.md
    case "${5:-}" in
      link) ln -s "$6" token-link ;;
      huge) head -c "$6" /dev/zero > huge.bin ;;
    esac
    echo "agent: edited CHANGES.md (and more)"
    ;;
  *)
    echo "fake-agent: unknown action $action" >&2
    exit 64
    ;;
esac
