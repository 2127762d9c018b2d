package e2e

// Ports, child processes, polling, load loops, what /proc says of a process, and file checks.

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// handedOut holds every port freePort has returned in this process: with parallel tests, a port
// one test chose (and whose server may not be listening yet, or is down for an outage) must not
// be given to another test.
var handedOut struct {
	sync.Mutex
	ports map[int]bool
}

// freePort returns a loopback TCP port that is free now and was never returned before in this
// process (and, when pair is true, port+1 too, for a Vault dev server's cluster listener).
// It takes ports below the kernel's ephemeral range when it can, so that no outgoing connection
// (of this or any process) takes the port before the server binds it, or while it is stopped.
func freePort(t testing.TB, pair bool) int {
	t.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports == nil {
		handedOut.ports = map[int]bool{}
	}
	lo, hi := listenPortRange()
	for i := 0; i < 500; i++ {
		port := 0
		if hi > lo {
			port = lo + mrand.IntN(hi-lo)
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			if port == 0 {
				t.Fatalf("listen: %v", err)
			}
			continue
		}
		port = l.Addr().(*net.TCPAddr).Port
		if handedOut.ports[port] || (pair && handedOut.ports[port+1]) {
			l.Close()
			continue
		}
		if !pair {
			l.Close()
			handedOut.ports[port] = true
			return port
		}
		l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+1))
		l.Close()
		if err == nil {
			l2.Close()
			handedOut.ports[port], handedOut.ports[port+1] = true, true
			return port
		}
	}
	t.Fatal("no free port (pair) found")
	return 0
}

// listenPortRange is [lo, hi) below the kernel's ephemeral port range (ip_local_port_range),
// from 20000; lo == hi when there is no such room (then freePort lets the kernel choose).
func listenPortRange() (lo, hi int) {
	const floor = 20000
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0
	}
	ephemeralLo, err := strconv.Atoi(f[0])
	if err != nil || ephemeralLo-1 <= floor+1000 {
		return 0, 0
	}
	return floor, ephemeralLo - 1 // -1: port+1 of a pair stays below the range too
}

// proc is a child process in its own process group, with its output in a log file.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	mu      sync.Mutex
	err     error
}

// startProc starts bin with args and env (exactly: nothing is inherited) in its own process
// group, stdout and stderr appended to logPath.
func startProc(t testing.TB, name, logPath string, env []string, stdin io.Reader, bin string, args ...string) *proc {
	t.Helper()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatalf("open %s: %v", logPath, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Stdin = stdin
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		logf.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.done)
	}()
	return p
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, waits up to grace, then kills the whole process group (plugin children too).
func (p *proc) stop(grace time.Duration) {
	if p == nil {
		return
	}
	if !p.exited() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
		}
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
}

// kill sends SIGKILL to the process group at once (a crash).
func (p *proc) kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// eventually polls cond every 200ms until it returns true or timeout passes; then it fails the
// test with what and the last detail cond gave.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var detail string
	for {
		var ok bool
		ok, detail = cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %s: %s", what, timeout, detail)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// load is a set of goroutines that each call an operation back to back.
type load struct {
	done chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

// startLoad starts n goroutines that call op(worker) back to back, worker in [0, n), until op
// returns false or Stop is called. op is called from those goroutines at once.
func startLoad(n int, op func(worker int) (more bool)) *load {
	l := &load{done: make(chan struct{})}
	for w := range n {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.done:
					return
				default:
				}
				if !op(w) {
					return
				}
			}
		}()
	}
	return l
}

// Stop ends the loops and waits for the calls in flight.
func (l *load) Stop() {
	l.once.Do(func() { close(l.done) })
	l.wg.Wait()
}

// Wait waits until every loop has ended by itself (op returned false).
func (l *load) Wait() { l.wg.Wait() }

// cleanEnv is the environment of this process without any VAULT_* variable (a developer's
// VAULT_ADDR or VAULT_TOKEN must not leak into the servers or the CLI), with HOME set to home so
// that no ~/.vault-token is read or written.
func cleanEnv(home string, extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "VAULT_") || strings.HasPrefix(kv, "HOME=") || strings.HasPrefix(kv, "TOOKEN_ROOT_SECRET=") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "HOME="+home)
	return append(env, extra...)
}

func randomAlnum(n int) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	for i := range b {
		k, err := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		if err != nil {
			panic(err)
		}
		b[i] = alphabet[k.Int64()]
	}
	return string(b)
}

// ---------------------------------------------------------------------------------------------
// What /proc says of a process (Linux)

// clockTicks is the unit of utime and stime in /proc/<pid>/stat (USER_HZ, 100 on Linux).
const clockTicks = 100

// procStatFields returns the fields of /proc/<pid>/stat after the command name, so that field
// k of proc(5) (1-based) is at index k-3.
func procStatFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	// The command name is in parentheses and may hold spaces and parentheses itself.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return nil, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	return f, nil
}

// procCPU is the CPU time a process has used so far, user and system, all its threads.
func procCPU(pid int) (time.Duration, error) {
	f, err := procStatFields(pid)
	if err != nil {
		return 0, err
	}
	utime, err1 := strconv.ParseInt(f[14-3], 10, 64)
	stime, err2 := strconv.ParseInt(f[15-3], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// procThreadsCPU is the CPU time the running threads of a process have used, to the
// nanosecond: the sum of the first field of /proc/<pid>/task/*/schedstat. Unlike procCPU it
// misses threads that have exited, which a Go process seldom has.
func procThreadsCPU(pid int) (time.Duration, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, err
	}
	var sum time.Duration
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, task.Name()))
		if err != nil {
			continue // the thread has just exited
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			return 0, fmt.Errorf("/proc/%d/task/%s/schedstat is empty", pid, task.Name())
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/task/%s/schedstat: %w", pid, task.Name(), err)
		}
		sum += time.Duration(ns)
	}
	return sum, nil
}

// procRSS is a process's resident set size in bytes (VmRSS of /proc/<pid>/status).
func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/status VmRSS %q: %w", pid, rest, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}

// childPIDs lists the running processes whose parent is ppid.
func childPIDs(ppid int) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := procStatFields(pid)
		if err != nil || f[4-3] != strconv.Itoa(ppid) || f[3-3] == "Z" {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// ---------------------------------------------------------------------------------------------
// Files and checks

// tail returns the last n bytes of a log file, for failure messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// assertNoSecrets fails the test if any secret appears in any file (missing files are skipped).
// Secrets are named by index only, so a failure prints no secret.
func assertNoSecrets(t testing.TB, files []string, secrets []string) {
	t.Helper()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			t.Fatalf("read %s: %v", f, err)
		}
		for i, s := range secrets {
			if s == "" {
				continue
			}
			if n := bytes.Count(b, []byte(s)); n > 0 {
				t.Errorf("%s holds plaintext secret #%d (%d times)", filepath.Base(f), i, n)
			}
		}
	}
}

func copyFile(t testing.TB, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func fileSHA256(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// countLines counts the lines of a file that contain substr.
func countLines(t testing.TB, path, substr string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1024*1024), 16*1024*1024)
	for sc.Scan() {
		if strings.Contains(sc.Text(), substr) {
			n++
		}
	}
	return n
}
