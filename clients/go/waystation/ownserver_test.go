package waystation_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/waystation/waystation/clients/go/waystation"
	"github.com/waystation/waystation/clients/go/waystationv1"
)

// startOwnServer starts a real Waystation server of the test's own, for what the shared one
// at WAYSTATION_ADDRESS does not have (a raised --max-message-bytes), and returns its
// address; the test's cleanup stops it. It is started as scripts/with_server.sh starts that
// one: the Python in $PYTHON, else the repository's .venv, with the repository on PYTHONPATH,
// serving the example and test workflows from a fresh SQLite file.
func startOwnServer(t *testing.T, options ...string) string {
	t.Helper()
	addr, _ := startOwnServerToStop(t, options...)
	return addr
}

// startOwnServerToStop is startOwnServer for a test that stops the server itself, as a
// rollout does: stop sends SIGTERM (the server drains) and returns once the process exited.
// Calling it again, or the test's cleanup, does nothing more.
func startOwnServerToStop(t *testing.T, options ...string) (addr string, stop func()) {
	t.Helper()
	repo, err := filepath.Abs("../../..") // go test runs in clients/go/waystation
	if err != nil {
		t.Fatal(err)
	}
	python := os.Getenv("PYTHON")
	if python == "" {
		python = filepath.Join(repo, ".venv", "bin", "python")
	}
	dir := t.TempDir()
	addr = freeAddress(t)
	args := []string{"-m", "waystation.cli", "serve", "--listen", addr,
		"--db", "sqlite:///" + filepath.Join(dir, "ws.db"),
		"--workflows", "waystation.examples", "--workflows", "tests.support.workflows"}
	cmd := exec.Command(python, append(args, options...)...)
	cmd.Dir, cmd.Env = repo, append(os.Environ(), "PYTHONPATH="+repo)
	log, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the server: %v", err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM) // as with_server.sh stops its server
			_ = cmd.Wait()
		})
	}
	t.Cleanup(stop)
	awaitServing(t, addr, filepath.Join(dir, "server.log"))
	return addr, stop
}

// awaitServing waits until the server at addr answers a call (any answer), for at most 20 s.
func awaitServing(t *testing.T, addr, log string) {
	t.Helper()
	c, err := waystation.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for deadline := time.Now().Add(20 * time.Second); ; {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.ListWorkflows(ctx, &waystationv1.ListWorkflowsRequest{})
		cancel()
		if code := status.Code(err); code != codes.Unavailable && code != codes.DeadlineExceeded {
			return
		}
		if time.Now().After(deadline) {
			text, _ := os.ReadFile(log)
			t.Fatalf("the server did not answer within 20 s:\n%s", text)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func freeAddress(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
