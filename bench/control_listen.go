package bench

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// ctlCheckListeners answers TCP health checks in the backend namespace: one
// listening socket per port (on every address), all served by one OS
// thread of their own that waits in epoll and accepts and closes. It costs
// little, and its CPU is that thread's alone (ctlThreadCPU), apart from the
// daemon's and from the rest of the bench. The kernel's work of the
// handshake itself runs in softirq context wherever the packet is sent
// from, over veth mostly in the daemon's connect, and is charged there.
type ctlCheckListeners struct {
	fds      []int
	epfd     int
	tid      int
	accepted atomic.Uint64
	stop     atomic.Bool
	done     chan struct{}
}

// listen opens the listeners in the backend namespace and starts serving.
func (e *ctlEnv) listen(ports []int) (_ *ctlCheckListeners, err error) {
	cl := &ctlCheckListeners{epfd: -1, done: make(chan struct{})}
	defer func() {
		if err != nil {
			close(cl.done) // nothing serves
			cl.Close()
		}
	}()
	err = e.lab.Backends[0].Do(func() error {
		for _, p := range ports {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("socket: %w", err)
			}
			cl.fds = append(cl.fds, fd)
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
				return fmt.Errorf("reuseaddr: %w", err)
			}
			if err := unix.Bind(fd, &unix.SockaddrInet4{Port: p}); err != nil {
				return fmt.Errorf("bind port %d: %w", p, err)
			}
			if err := unix.Listen(fd, 4096); err != nil {
				return fmt.Errorf("listen on %d: %w", p, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if cl.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("epoll: %w", err)
	}
	for _, fd := range cl.fds {
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
		if err := unix.EpollCtl(cl.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			return nil, fmt.Errorf("epoll add: %w", err)
		}
	}
	tid := make(chan int, 1)
	go cl.serve(tid)
	cl.tid = <-tid
	return cl, nil
}

// serve runs on a thread of its own until stop: it is never unlocked, so
// the thread ends with it and its CPU time is the listeners' only.
func (cl *ctlCheckListeners) serve(tid chan<- int) {
	runtime.LockOSThread()
	defer close(cl.done)
	tid <- unix.Gettid()
	events := make([]unix.EpollEvent, 256)
	for !cl.stop.Load() {
		n, err := unix.EpollWait(cl.epfd, events, 100) // ms: how soon stop is seen
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return
		}
		for _, ev := range events[:n] {
			// Drain the accept queue (bounded: at most its backlog).
			for range 4096 {
				nfd, _, err := unix.Accept4(int(ev.Fd), unix.SOCK_CLOEXEC)
				if err != nil {
					break
				}
				unix.Close(nfd)
				cl.accepted.Add(1)
			}
		}
	}
}

// cpu returns the user and system time of the serving thread.
func (cl *ctlCheckListeners) cpu() (user, sys time.Duration, err error) {
	return ctlStatCPU(fmt.Sprintf("/proc/self/task/%d/stat", cl.tid))
}

func (cl *ctlCheckListeners) Close() {
	cl.stop.Store(true)
	<-cl.done
	for _, fd := range cl.fds {
		unix.Close(fd)
	}
	if cl.epfd >= 0 {
		unix.Close(cl.epfd)
	}
}
