#!/usr/bin/env bash
# vit-bench against the peer benchmarks (PyTorch, ONNX Runtime), side by side, through the
# peers' compare.py (interleaved A B / B A runs in one time window). Writes one markdown table
# and the exact commands to bench/results/<date>.md; compare.py's per-round log goes next to it.
#
#   bench/compare.sh                      # ViT-Ti/S/B x batch 1, 8 x threads 1, 2 x all peers
#   bench/compare.sh --models vit_tiny_patch16_224 --batches 1 --threads 1 \
#                    --peers torch-fp32 --runs 5 --rounds 2
#
# Options (defaults in brackets):
#   --models LIST   comma list of peers.py models [vit_tiny_patch16_224,vit_small_patch16_224,
#                   vit_base_patch16_224]
#   --batches LIST  [1,8]            --threads LIST  [1,2]
#   --peers LIST    [torch-fp32,torch-bf16,ort-fp32]
#   --precision P   ours: fp32, bf16 or int8 [fp32] (the peers keep their own precision)
#   --runs N [10]   --warmup N [3]   --rounds N [3]  --gate S [0] (see compare.py --help)
#   --load N        [0] keep N busy-loop processes running during every timed run (a competing
#                   load: with 1 on a 2-core machine, the other core is busy)
#   --out FILE      [bench/results/<YYYY-MM-DD>.md, -<HHMMSS> added if it exists]
# Environment:
#   VIT_PEERS_DIR   folder with compare.py, peers.py, setup.sh [<this folder>/../../shared/bench]
#   VIT_BENCH       the vit-bench program [$VIT_BUILD_DIR/bin/vit-bench]
#   VIT_BUILD_DIR   build folder of vit [<this folder>/../build]
#   VIT_PEERS_PYTHON, VIT_PEERS_CACHE, VIT_PEERS_NODE: as for peers.py
#
# For 2 threads both sides get OMP_WAIT_POLICY=PASSIVE (unless already set), as peers.py
# does for torch. Thread counts vit-bench rejects (a vit without multi-threading) are skipped
# and listed in the results file.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
PEERS_DIR="${VIT_PEERS_DIR:-$(dirname "$0")/../../shared/bench}"
BUILD_DIR="${VIT_BUILD_DIR:-$REPO/build}"
BENCH="${VIT_BENCH:-$BUILD_DIR/bin/vit-bench}"
PY="${VIT_PEERS_PYTHON:-/usr/bin/python3}"
CACHE="${VIT_PEERS_CACHE:-$HOME/.cache/vit-peers}"

MODELS="vit_tiny_patch16_224,vit_small_patch16_224,vit_base_patch16_224"
BATCHES="1,8"
THREADS="1,2"
PEERS="torch-fp32,torch-bf16,ort-fp32"
PRECISION="fp32"
RUNS=10
WARMUP=3
ROUNDS=3
GATE=0
LOAD=0
OUT=""

say() { printf '[compare.sh] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --models) MODELS="$2"; shift 2 ;;
    --batches) BATCHES="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --peers) PEERS="$2"; shift 2 ;;
    --precision) PRECISION="$2"; shift 2 ;;
    --runs) RUNS="$2"; shift 2 ;;
    --warmup) WARMUP="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --gate) GATE="$2"; shift 2 ;;
    --load) LOAD="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
done
case "$PRECISION" in
  fp32|bf16|int8) ;;
  *) usage >&2; die "--precision must be fp32, bf16 or int8, got '$PRECISION'" ;;
esac
case "$LOAD" in
  ''|*[!0-9]*) usage >&2; die "--load must be a count of processes (0 or more), got '$LOAD'" ;;
esac
IFS=, read -r -a model_list <<< "$MODELS"
IFS=, read -r -a batch_list <<< "$BATCHES"
IFS=, read -r -a thread_list <<< "$THREADS"
IFS=, read -r -a peer_list <<< "$PEERS"

# --- 1. the peers must be installed ---------------------------------------------------------
if [ ! -f "$PEERS_DIR/compare.py" ] || [ ! -f "$PEERS_DIR/peers.py" ]; then
  die "no compare.py/peers.py in '$PEERS_DIR' (set VIT_PEERS_DIR to the folder of the peer benchmarks)"
fi
PEERS_DIR="$(cd "$PEERS_DIR" && pwd)"
install_hint="install the peers with:  bash $PEERS_DIR/setup.sh   (Debian python3-torch, python3-torchvision, python3-onnx, nodejs/npm, onnxruntime-node into $CACHE; add 'all' to export the ONNX models now)"
missing=""
for p in "${peer_list[@]}"; do
  case "$p" in
    torch-fp32|torch-bf16)
      "$PY" -c 'import torch, torchvision' 2>/dev/null || missing="$missing torch/torchvision (for $PY)" ;;
    ort-fp32)
      command -v "${VIT_PEERS_NODE:-node}" >/dev/null 2>&1 || missing="$missing node"
      [ -f "$CACHE/node_modules/onnxruntime-node/package.json" ] \
        || missing="$missing onnxruntime-node (in $CACHE)"
      "$PY" -c 'import torch, torchvision, onnx' 2>/dev/null \
        || missing="$missing torch/torchvision/onnx (for the ONNX export)" ;;
    *) die "unknown peer '$p' (peers.py knows torch-fp32, torch-bf16, ort-fp32)" ;;
  esac
done
if [ -n "$missing" ]; then
  say "the peers are not installed: missing$missing"
  say "$install_hint"
  exit 1
fi
say "peers installed (peers folder: $PEERS_DIR)"

# --- 2. our benchmark ---------------------------------------------------------------------------
[ -x "$BENCH" ] || die "no vit-bench at '$BENCH'; build it with:  cmake -S $REPO -B $BUILD_DIR -DCMAKE_BUILD_TYPE=Release && cmake --build $BUILD_DIR -j2 --target vit-bench   (or set VIT_BENCH)"
BENCH="$(cd "$(dirname "$BENCH")" && pwd)/$(basename "$BENCH")"

run_threads=()
skipped=""
for t in "${thread_list[@]}"; do
  if err="$("$BENCH" --model "${model_list[0]}" --threads "$t" --precision "$PRECISION" --runs 1 --warmup 0 --json 2>&1 >/dev/null)"; then
    run_threads+=("$t")
  else
    skipped="$skipped- threads $t skipped: ${err//$'\n'/ }"$'\n'
    say "threads $t skipped: $err"
  fi
done
[ ${#run_threads[@]} -gt 0 ] || die "vit-bench runs none of the thread counts '$THREADS'"

# ONNX files for ORT, exported now rather than inside the first timed round.
for p in "${peer_list[@]}"; do
  if [ "$p" = ort-fp32 ]; then
    for m in "${model_list[@]}"; do
      VIT_PEERS_CACHE="$CACHE" "$PY" "$PEERS_DIR/peers.py" --export --model "$m" >/dev/null
    done
  fi
done

# --- 3. the runs ------------------------------------------------------------------------------------
mkdir -p "$HERE/results"
if [ -z "$OUT" ]; then
  OUT="$HERE/results/$(date +%Y-%m-%d).md"
  [ -e "$OUT" ] && OUT="$HERE/results/$(date +%Y-%m-%d-%H%M%S).md"
fi
mkdir -p "$(dirname "$OUT")"
OUT="$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")"
LOG="${OUT%.md}.log"
JSONL="${OUT%.md}.ours.jsonl"
work="$(mktemp -d)"
load_pids=()
cleanup() {
  for pid in "${load_pids[@]+"${load_pids[@]}"}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
# The competing load: plain shell busy loops, started once and ended by cleanup.
for ((i = 0; i < LOAD; i++)); do
  sh -c 'while :; do :; done' &
  load_pids+=("$!")
done
[ "$LOAD" -eq 0 ] || say "competing load: $LOAD busy-loop process(es) running"
: > "$LOG"
: > "$JSONL"
started="$(date -u '+%Y-%m-%d %H:%M UTC')"

# Variables from the caller's environment that change what runs, shown with each command.
env_shown=""
for v in LD_LIBRARY_PATH LD_PRELOAD $(compgen -e | grep -E '^(OPENBLAS|OMP|MKL|GOMP)_' | grep -vx OMP_WAIT_POLICY) \
         VIT_PEERS_PYTHON VIT_PEERS_CACHE VIT_PEERS_NODE; do
  if [ -n "${!v:-}" ]; then env_shown="$env_shown$v=${!v} "; fi
done

# Ours: vit-bench's JSON goes to compare.py and is kept in $JSONL (foreign load of our runs).
ours="'$BENCH' --model {model} --batch {batch} --threads {threads} --precision $PRECISION --runs {runs} --warmup {warmup} --json | tee -a '$JSONL'"
n=0
for m in "${model_list[@]}"; do
  for b in "${batch_list[@]}"; do
    for t in "${run_threads[@]}"; do
      n=$((n + 1))
      env_prefix=""
      if [ "$t" -gt 1 ]; then env_prefix="OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}"; fi
      env_args=(${env_prefix:+"$env_prefix"})
      args=(--model "$m" --batch "$b" --threads "$t" --runs "$RUNS" --warmup "$WARMUP"
            --rounds "$ROUNDS" --peers "$PEERS" --gate "$GATE")
      printf '%s%sOURS="%s" python3 %s %s\n' "$env_shown" "${env_prefix:+$env_prefix }" "$ours" \
        "$PEERS_DIR/compare.py" "${args[*]}" >> "$work/commands.txt"
      say "[$n] $m batch $b threads $t: ${PEERS//,/, } x $ROUNDS rounds x $RUNS runs"
      echo "### $m batch $b threads $t" >> "$LOG"
      if ! env "${env_args[@]+"${env_args[@]}"}" OURS="$ours" python3 "$PEERS_DIR/compare.py" "${args[@]}" \
          > "$work/table-$n.md" 2> >(tee -a "$LOG" >&2); then
        die "compare.py failed for $m batch $b threads $t (log: $LOG)"
      fi
      printf '%s\t%s\t%s\t%s\n' "$n" "$m" "$b" "$t" >> "$work/configs.tsv"
    done
  done
done

# --- 4. one table -------------------------------------------------------------------------------------
python3 - "$work" "$OUT" "$started" "$JSONL" "$RUNS" "$WARMUP" "$ROUNDS" "$GATE" "$skipped" "$REPO" "$PRECISION" "$LOAD" <<'PY'
import json, os, statistics, subprocess, sys
work, out, started, jsonl, runs, warmup, rounds, gate, skipped, repo, precision, load = sys.argv[1:]
every = [json.loads(l) for l in open(jsonl) if l.strip()]
rows, versions = [], set()
for line in open(os.path.join(work, 'configs.tsv')):
    n, model, batch, threads = line.rstrip('\n').split('\t')
    ours = [o for o in every if (o['model'], str(o['batch']), str(o['threads'])) == (model, batch, threads)]
    fl = [o['foreign_cores'] for o in ours if isinstance(o.get('foreign_cores'), (int, float))]
    versions.update(o.get('version', '') for o in ours)
    ours_fl = f'{statistics.mean(fl):.2f} [{min(fl):.2f}-{max(fl):.2f}]' if fl else '-'
    for l in open(os.path.join(work, f'table-{n}.md')):
        if l.startswith('| ') and not l.startswith('| peer |'):
            cells = l.strip().strip('|').split('|')
            rows.append([model, batch, threads] + [c.strip() for c in cells] + [ours_fl])
head = ['model', 'batch', 'threads', 'peer', 'ours ms', 'peer ms', 'ours/peer (per-round median, min-max)',
        'ours img/s', 'peer img/s', 'ours GFLOP/s', 'peer GFLOP/s', 'ours RSS MB', 'peer RSS MB',
        'foreign load (peer runs)', 'foreign load (our runs, mean [min-max])']
cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), '?')
with open(out, 'w') as f:
    f.write(f'# vit-bench ({precision}) vs peers, {started}\n\n')
    f.write(f'Machine: {os.cpu_count()} CPUs ({cpu}), shared with other processes: compare only the '
            'ratios, and look at the foreign load columns (cores used by other processes while '
            'the runs were timed; above ~0.3 the 2-thread numbers are not trustworthy).\n\n')
    if int(load):
        f.write(f'Competing load (`--load {load}`): {load} busy-loop process(es) (`sh -c \'while :; do :; '
                'done\'`) ran during every timed run, so the foreign load columns read about '
                f'{load} core(s) by design.\n\n')
    f.write(f'{rounds} rounds x {runs} timed runs (+{warmup} warm-up) per process, gate {gate} s; ms are per '
            'batch, medians over rounds of per-process medians; ratio < 1: ours faster.\n\n')
    f.write('| ' + ' | '.join(head) + ' |\n|' + '---|' * len(head) + '\n')
    for r in rows:
        f.write('| ' + ' | '.join(r) + ' |\n')
    try:
        rev = subprocess.run(['git', '-C', repo, 'describe', '--always', '--dirty'], capture_output=True,
                             text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        rev = 'unknown'
    f.write('\nours: ' + '; '.join(sorted(v for v in versions if v)) + f' (vit tree {rev})\n')
    if skipped:
        f.write('\n' + skipped)
    f.write('\nCommands (our JSON lines are kept in `' + os.path.basename(jsonl) + '`):\n\n```sh\n')
    f.write(open(os.path.join(work, 'commands.txt')).read())
    f.write('```\n\nPer-round log: `' + os.path.basename(out)[:-3] + '.log`.\n')
PY
say "wrote $OUT (log: $LOG)"
cat "$OUT"
