// Package childproc starts server child processes (PostgreSQL, Redis,
// RabbitMQ) so that they die with the program that started them.
//
// The caller sets cmd.SysProcAttr.Pdeathsig. Linux sends it when the thread
// that started the child exits, not the process (go.dev/issue/27505), so
// Start starts and waits for the child on a goroutine locked to its OS
// thread for as long as the child lives.
package childproc

import (
	"fmt"
	"os/exec"
	"runtime"
)

// Process is a started child.
type Process struct {
	// Cmd is the command Start started.
	Cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start starts cmd as described in the package documentation.
func Start(cmd *exec.Cmd) (*Process, error) {
	p := &Process{Cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	return p, nil
}

// Done is closed when the child has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is the child's exit error; it is meaningful once Done is closed.
func (p *Process) Err() error { return p.err }

// Exited reports whether the child has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}
