package main

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cpuSnap is the CPU time used so far by this process and by the local
// PostgreSQL server processes, so that a phase can report where the two
// cores went.
type cpuSnap struct {
	self time.Duration
	pg   time.Duration
	pgOK bool
	// busy is the non-idle time of all CPUs of the machine: what neither
	// this process nor our PostgreSQL used of it went to other processes
	// (the machine is shared and noisy).
	busy time.Duration
	wall time.Time
	// elapsed is the wall time of an interval (a difference of snapshots).
	elapsed time.Duration
}

// clockTick is USER_HZ, 100 on every Linux this runs on.
const clockTick = 10 * time.Millisecond

// pgPort is the port of the PostgreSQL server whose processes are
// accounted; 0 accounts nothing.
var pgPort int

func takeCPU() cpuSnap {
	var s cpuSnap
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if pgPort != 0 {
		s.pg, s.pgOK = postgresCPU(pgPort)
	}
	s.busy = machineBusy()
	s.wall = time.Now()
	return s
}

// machineBusy reads the non-idle CPU time of the machine from /proc/stat.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		switch i {
		case 3, 4: // idle, iowait
		case 8, 9: // guest, guest_nice: already in user, nice
		default:
			busy += n
		}
	}
	return time.Duration(busy) * clockTick
}

// other returns the CPU time that went to other processes than this one and
// our PostgreSQL during the interval d (a difference of two snapshots).
func (d cpuSnap) other() time.Duration {
	if !d.pgOK {
		return max(0, d.busy-d.self)
	}
	return max(0, d.busy-d.self-d.pg)
}

// sub returns the CPU time used between b and a (a later).
func (a cpuSnap) sub(b cpuSnap) cpuSnap {
	return cpuSnap{self: a.self - b.self, pg: a.pg - b.pg, pgOK: a.pgOK && b.pgOK,
		busy: a.busy - b.busy, elapsed: a.wall.Sub(b.wall)}
}

// postgresCPU sums the user and system time of the postmaster listening on
// port and of its children, plus the time of the children it already reaped
// (backends of closed connections). It reports false when no such
// postmaster is visible (a remote DATABASE_URL).
func postgresCPU(port int) (time.Duration, bool) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, false
	}
	type proc struct {
		ppid          int
		own, children int64
	}
	procs := map[int]proc{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ... ; comm may hold spaces: cut at the last ')'.
		open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
		if open < 0 || end < open {
			continue
		}
		if string(b[open+1:end]) != "postgres" {
			continue
		}
		f := strings.Fields(string(b[end+1:]))
		// After the comm: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
		if len(f) < 15 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		cut, _ := strconv.ParseInt(f[13], 10, 64)
		cst, _ := strconv.ParseInt(f[14], 10, 64)
		procs[pid] = proc{ppid: ppid, own: ut + st, children: cut + cst}
	}
	portArg := []byte("\x00-p\x00" + strconv.Itoa(port) + "\x00")
	for pid, p := range procs {
		if _, parentIsPostgres := procs[p.ppid]; parentIsPostgres {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		if err != nil || !bytes.Contains(cmdline, portArg) {
			continue
		}
		ticks := p.own + p.children // the postmaster, and its reaped backends
		for _, c := range procs {
			if c.ppid == pid {
				ticks += c.own
			}
		}
		return time.Duration(ticks) * clockTick, true
	}
	return 0, false
}

// processGroupCPU sums the user and system CPU time of the processes of
// the process group pgid, from /proc, with the children they reaped.
func processGroupCPU(pgid int) time.Duration {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	var ticks int64
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		end := bytes.LastIndexByte(b, ')')
		if end < 0 {
			continue
		}
		// After the comm: state(0) ppid(1) pgrp(2) ... utime(11) stime(12) cutime(13) cstime(14).
		f := strings.Fields(string(b[end+1:]))
		if len(f) < 15 || f[2] != strconv.Itoa(pgid) {
			continue
		}
		for _, i := range []int{11, 12, 13, 14} {
			n, _ := strconv.ParseInt(f[i], 10, 64)
			ticks += n
		}
	}
	return time.Duration(ticks) * clockTick
}
