#!/usr/bin/env bash
# Does a broker's shard thread sleep in D state (uninterruptible: the whole shard waits), and in
# what? perf's view, to check the bench's D-state sampler (bench/src/dstate.rs) against: every
# switch-out, not 1 ms samples, with its kernel call chain.
#
#   bench/tools/dstate_perf.sh PID SECONDS [--prefix shard] [--helper-prefix shard-blocking]
#                              [--top N] [--keep FILE]
#
# Records `perf record -e sched:sched_switch -g -p PID` for SECONDS (the PID's threads at the
# start), keeping only switches out of D state (tracepoint filter `prev_state & 2`, so a loaded
# broker does not fill the disk), then reads them with `perf script` and prints, per thread of the
# process that went into D: its role, name, id and count of D switches; then the N (default 8) most
# frequent kernel call chains of each role, innermost first, the scheduler's own frames left out,
# so "evict", "unlink", "rename", "__fput" or "fsync" show or do not.
# Roles, as the bench's sampler decides them:
#   shard   an executor thread: name starting with --prefix (default shard), not with
#           --helper-prefix, the lowest thread id of its name. A D switch here stalls the shard.
#   helper  glommio's blocking thread (name starting with --helper-prefix, default shard-blocking;
#           or a second thread of an executor's name, as a broker that leaves it unnamed has it):
#           sleeping there is its job.
#   io-wq   io_uring's kernel workers of a shard (iou-wrk-<executor tid>): they block for the ring.
#   other   any other thread of the process.
# The last line is machine-readable: "shard D switches: N".
# --keep FILE keeps the perf data there (removed otherwise). Needs root (or perf_event_paranoid
# allowing tracepoints) and perf. Run it while a load runs, e.g. beside
# `bench --soak-seconds ...`.
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

die() {
    echo "dstate_perf.sh: $*" >&2
    exit 1
}

pid=
seconds=
prefix=shard
helper_prefix=shard-blocking
top=8
keep=
while [[ $# -gt 0 ]]; do
    case $1 in
        --prefix) prefix=${2:-}; shift 2 ;;
        --helper-prefix) helper_prefix=${2:-}; shift 2 ;;
        --top) top=${2:-}; shift 2 ;;
        --keep) keep=${2:-}; shift 2 ;;
        -h|--help) usage ;;
        -*) echo "dstate_perf.sh: unknown option $1" >&2; usage ;;
        *)
            if [[ -z $pid ]]; then pid=$1; elif [[ -z $seconds ]]; then seconds=$1; else usage; fi
            shift
            ;;
    esac
done
[[ $pid =~ ^[0-9]+$ ]] || usage
[[ $seconds =~ ^[0-9]+([.][0-9]+)?$ ]] || usage
[[ $top =~ ^[0-9]+$ ]] || die "--top $top: not a number"
[[ -n $prefix ]] || die "--prefix must not be empty"
[[ -d /proc/$pid/task ]] || die "no process $pid"
command -v perf >/dev/null || die "perf is missing (apt-get install linux-perf)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
data=${keep:-$work/perf.data}

# Roles from the thread names now (perf only records the threads that exist now, too).
for task in /proc/"$pid"/task/*; do
    tid=${task##*/}
    comm=$(cat "$task/comm" 2>/dev/null) || continue
    printf '%s\t%s\n' "$tid" "$comm"
done | sort -n >"$work/threads"
awk -F'\t' -v prefix="$prefix" -v helper="$helper_prefix" '
    {
        tid = $1; comm = $2; role = "other"
        if (helper != "" && index(comm, helper) == 1) role = "helper"
        else if (index(comm, prefix) == 1) role = (comm in first) ? "helper" : "shard"
        else if (comm ~ /^iou-wrk-/) role = "io-wq"
        if (!(comm in first)) first[comm] = tid
        print tid "\t" role "\t" comm
    }' "$work/threads" >"$work/roles"
grep -q $'\tshard\t' "$work/roles" || echo "dstate_perf.sh: warning: no thread of $pid is named $prefix* (see /proc/$pid/task/*/comm; --prefix)" >&2

echo "dstate_perf.sh: recording D-state switches of PID $pid for $seconds s" >&2
# prev_state & 2: TASK_UNINTERRUPTIBLE (idle kernel threads add TASK_NOLOAD and print as I:
# left out below).
if ! perf record -q -e sched:sched_switch --filter 'prev_state & 2' -g -p "$pid" -o "$data" -- sleep "$seconds" >"$work/record.log" 2>&1; then
    cat "$work/record.log" >&2
    die "perf record failed"
fi
perf script -i "$data" 2>/dev/null >"$work/script" || die "perf script failed"

awk -v top="$top" -v seconds="$seconds" -v pid="$pid" '
    FNR == NR {
        split($0, field, "\t")
        role[field[1]] = field[2]; name[field[1]] = field[3]
        next
    }
    # A record: a header line, its call chain (indented), an empty line.
    /^[^ \t]/ {
        flush()
        in_d = 0; chain = ""; frames = 0; record_syscall = ""; previous = ""
        if (match($0, /prev_pid=[0-9]+/)) tid = substr($0, RSTART + 9, RLENGTH - 9)
        if (match($0, /prev_state=[^ ]+/)) state = substr($0, RSTART + 11, RLENGTH - 11)
        if (match($0, /prev_comm=.* prev_pid=/)) comm = substr($0, RSTART + 10, RLENGTH - 20)
        in_d = (state ~ /^D/)
        next
    }
    /^[ \t]+[0-9a-f]+ / && in_d {
        if ($0 !~ /kernel\.kallsyms/) next
        function_name = $2; sub(/\+0x[0-9a-f]+$/, "", function_name)
        if (function_name == "__schedule" || function_name == "schedule" || function_name ~ /^entry_SYSCALL|^do_syscall_64$/) next
        if (frames < 16) { chain = chain (frames ? " <- " : "") function_name; frames++ }
        if (function_name ~ /^__(x64|do|se)_sys_/) { record_syscall = function_name; sub(/^__(x64|do|se)_sys_/, "", record_syscall) }
        # An io_uring worker: the operation is the frame above __io_issue_sqe (io_fsync, ...).
        if (function_name == "__io_issue_sqe" && previous ~ /^io_/) record_syscall = "io_uring " substr(previous, 4)
        previous = function_name
        next
    }
    END {
        flush()
        printf "%-7s %-18s %8s %12s\n", "role", "thread", "tid", "D switches"
        # Every shard and helper thread, with none too; other threads only with some.
        for (t in role) if ((role[t] == "shard" || role[t] == "helper") && !(t in count)) count[t] = 0
        for (t in count) {
            r = (t in role) ? role[t] : "other"
            n = (t in name) ? name[t] : comm_seen[t]
            printf "%-7s %-18s %8s %12d\n", r, n, t, count[t] | "sort -k4 -nr"
        }
        close("sort -k4 -nr")
        split("shard helper io-wq other", order, " ")
        for (i = 1; i <= 4; i++) {
            r = order[i]
            if (!(r in by_role)) continue
            printf "\n%s: %d D switches in %s s; top kernel call chains (innermost first):\n", r, by_role[r], seconds
            printed = 0
            # Selection of the largest counts, top times (the chains are few).
            delete shown
            while (printed < top) {
                best = ""; best_count = 0
                for (key in chains) {
                    split(key, part, SUBSEP)
                    if (part[1] != r || (key in shown)) continue
                    if (chains[key] > best_count) { best = key; best_count = chains[key] }
                }
                if (best == "") break
                shown[best] = 1
                split(best, part, SUBSEP)
                printf "%8d  [%s] %s\n", best_count, (best in syscalls) ? syscalls[best] : "-", part[2]
                printed++
            }
        }
        printf "\nshard D switches: %d\n", by_role["shard"] + 0
    }
    function flush(    r, key) {
        if (!in_d) return
        r = (tid in role) ? role[tid] : "other"
        count[tid]++; by_role[r]++; comm_seen[tid] = comm
        key = r SUBSEP (chain == "" ? "(no call chain)" : chain)
        chains[key]++
        # Without a syscall frame: work on the way back to user space (the last close of a
        # file, __fput, which may evict a deleted inode).
        if (record_syscall == "" && chain ~ /task_work_run/) record_syscall = "task_work"
        if (record_syscall != "") syscalls[key] = record_syscall
        in_d = 0
    }
' "$work/roles" "$work/script"
