package childproc

import (
	"errors"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

func TestStartWaitsAndReportsExit(t *testing.T) {
	cmd := exec.Command("sh", "-c", "exit 3")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	p, err := Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("child did not exit")
	}
	var exit *exec.ExitError
	if !p.Exited() || p.Err() == nil || !errors.As(p.Err(), &exit) || exit.ExitCode() != 3 {
		t.Fatalf("exited %v, err %v; want exit status 3", p.Exited(), p.Err())
	}
	if _, err := Start(exec.Command("/nonexistent/binary")); err == nil {
		t.Fatal("starting a missing binary succeeded")
	}
}
