package loader

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// pinSubdir holds every pin of xdplb under Options.BPFFS.
const pinSubdir = "xdplb"

var (
	// ErrIncompatiblePin means pinned state from an earlier run does not
	// match this build or these sizes. It is never replaced silently: that
	// would drop the connection table; the operator removes it on purpose.
	ErrIncompatiblePin = errors.New("incompatible pinned state")
	// ErrInvalid marks arguments the data plane cannot hold.
	ErrInvalid = errors.New("invalid argument")
	// ErrPinsInUse means another process has the pinned state loaded:
	// two writers of the same maps would undo each other's changes.
	ErrPinsInUse = errors.New("pinned state in use")
)

// Datapath owns the loaded program, its maps and its XDP links.
type Datapath struct {
	opts      Options
	log       *slog.Logger
	pinDir    string
	pinLock   *os.File // holds the flock on pinDir (see lockPinDir)
	objs      xdplbObjects
	innerSpec *ebpf.MapSpec
	dropNames map[uint32]string

	// mu serialises writers that read before they write (vip_addrs
	// counts, id checks) and the attachment list, and guards the VIP index.
	mu    sync.Mutex
	links []*attachment

	// The VIP index mirrors vips, vip_addrs and vip_filter so a VIP write
	// reads no map and writes only the entries it changes. Load rebuilds
	// it from the maps; this Datapath must be their only writer.
	vipIndex  map[VIPKey]VIPMeta // canonical key -> meta
	vipIDs    map[uint32]VIPKey  // id -> canonical key
	addrCount map[[16]byte]uint32
	bitCount  map[uint32]uint32 // pre-filter bit -> VIPs and NAT backends folding to it
	replyBits map[uint32]uint32 // NAT backend id -> its reply bit in the pre-filter
	filter    xdplbVipBitmap

	ct        *ctTable   // the connection table, mapped
	ticks     *tickClock // the connection table's clock, guarded by mu
	halfTicks uint64     // Options.HalfOpenTimeout in ticks, as the program has it

	eventNames map[uint32]string
	natParams  xdplbNatConfig // as written at load
	natMu      sync.Mutex     // guards the last sweep's result
	natStats   NATStats
	natSwept   bool

	// features are the kernel's answers to Load's probes, kept so that
	// nothing probes again; a test sets ElemCount false to count by walking.
	features Features
	// countIter makes the iterator that counts a map (newCountIter); a
	// test gives one that fails, to see how often it is tried.
	countIter countIterFunc
}

// Load loads the program, reuses compatible pinned maps under
// opts.BPFFS/xdplb (pinning new ones), and attaches to opts.Interfaces
// through pinned bpf_links, updating an existing link in place. It fills
// zero fields with Defaults and refuses what Validate refuses, except an
// empty opts.Interfaces, and an interface CheckInterfaces does not find.
func Load(opts Options) (*Datapath, error) {
	return loadWith(opts, newCountIter)
}

// loadWith is Load with the maker of count iterators given.
func loadWith(opts Options, countIter countIterFunc) (*Datapath, error) {
	opts.Defaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if err := opts.CheckInterfaces(); err != nil {
		return nil, err
	}
	mounted, err := ensureBPFFS(opts.BPFFS)
	if err != nil {
		return nil, err
	}
	if mounted {
		// Under `ip netns exec` (a private mount namespace) this mount, and
		// the pins and link in it, die with the process. Which namespace is
		// ours cannot always be told (init's may be unreadable), so say both.
		opts.Logger.Warn("mounted a new bpffs: pins last as long as this mount; in a private mount namespace "+
			"(ip netns exec) XDP stops forwarding when the daemon exits, so mount a bpffs there from the host "+
			"for restarts without loss", "bpffs", opts.BPFFS)
	}
	pinDir := filepath.Join(opts.BPFFS, pinSubdir)
	if err := os.MkdirAll(pinDir, 0o700); err != nil {
		return nil, fmt.Errorf("create pin dir: %w", err)
	}
	pinLock, err := lockPinDir(pinDir)
	if err != nil {
		return nil, err
	}
	d, err := loadLocked(opts, pinDir, pinLock, countIter)
	if err != nil {
		pinLock.Close()
		return nil, err
	}
	return d, nil
}

// loadLocked is Load once the pin dir is ours.
func loadLocked(opts Options, pinDir string, pinLock *os.File, countIter countIterFunc) (*Datapath, error) {
	// Before any map is made: the lookup tables cannot do without it.
	if err := probeMmapable(); err != nil {
		return nil, err
	}
	spec, specs, err := loadSpec(opts)
	if err != nil {
		return nil, err
	}
	names, err := dropReasonNames(spec)
	if err != nil {
		return nil, err
	}
	events, err := eventNames(spec)
	if err != nil {
		return nil, err
	}
	// The tick rate first: the half-open timeout is a constant of the
	// program, in ticks.
	ticks, err := newTickClock()
	if err != nil {
		return nil, err
	}
	halfTicks, err := halfOpenTicks(ticks, opts.HalfOpenTimeout)
	if err == nil {
		err = specs.CfgHalfTicks.Set(uint32(halfTicks))
	}
	if err != nil {
		ticks.Close()
		return nil, fmt.Errorf("set %s: %w", xdplbVarCfgHalfTicks, err)
	}
	d := &Datapath{
		opts:       opts,
		log:        opts.Logger,
		pinDir:     pinDir,
		pinLock:    pinLock,
		innerSpec:  specs.Lookup.InnerMap.Copy(),
		dropNames:  names,
		eventNames: events,
		ticks:      ticks,
		halfTicks:  halfTicks,
		features:   Features{Kernel: kernelRelease(), BTF: haveVmlinuxBTF(), Mmapable: true},
		countIter:  countIter,
	}
	if err := replaceStaleCounterPins(spec, pinDir, d.log); err != nil {
		ticks.Close()
		return nil, err
	}
	legacyNAT := pinned(pinDir, xdplbMapNatFlows) && !pinned(pinDir, xdplbMapCtHalf)
	ctp, err := prepareCTPins(spec, pinDir, d.log)
	if err == nil {
		err = specs.CfgCtSeed.Set(ctp.seed)
	}
	if err != nil {
		ticks.Close()
		return nil, err
	}
	if ctp.legacy != nil {
		defer ctp.legacy.Close()
	}
	err = spec.LoadAndAssign(&d.objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: pinDir}})
	if err != nil {
		ticks.Close()
		if ctp.legacy != nil {
			// Pinned again for the build that made it, or a retry.
			if perr := ctp.legacy.Pin(filepath.Join(pinDir, xdplbMapConntrack)); perr != nil {
				d.log.Warn("conntrack of an earlier build could not be pinned again", "err", perr)
			}
		}
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			// The whole log; the error alone keeps only its tail.
			d.log.Error("verifier rejected the program", "log", fmt.Sprintf("%+v", verr))
		}
		if errors.Is(err, ebpf.ErrMapIncompatible) {
			return nil, fmt.Errorf("%w: maps pinned under %s do not match this build or these sizes (%v); "+
				"remove that directory to start fresh (this drops the connection table)", ErrIncompatiblePin, pinDir, err)
		}
		return nil, fmt.Errorf("load bpf objects: %w", err)
	}
	if err := d.checkLookupCompatible(); err != nil {
		d.ticks.Close()
		d.objs.Close()
		return nil, err
	}
	if err := d.objs.CtSeed.Put(uint32(0), ctp.seed); err != nil {
		d.ticks.Close()
		d.objs.Close()
		return nil, fmt.Errorf("write ct_seed: %w", err)
	}
	if d.ct, err = mapCT(d.objs.Conntrack, d.objs.CtKeys, ctp.seed); err != nil {
		d.ticks.Close()
		d.ct.unmap()
		d.objs.Close()
		return nil, err
	}
	if err := d.probeBatchLookup(); err != nil {
		d.ticks.Close()
		d.ct.unmap()
		d.objs.Close()
		return nil, err
	}
	d.probeElemCount()
	if err := d.writeNATParams(); err != nil {
		d.ticks.Close()
		d.ct.unmap()
		d.objs.Close()
		return nil, err
	}
	if ctp.legacy != nil {
		n, err := d.migrateLegacyCT(ctp.legacy)
		if err != nil {
			// Not fatal: the flows not carried over are placed again
			// from the lookup tables.
			d.log.Warn("conntrack: flows of the earlier build's table not all carried over", "carried", n, "err", err)
		}
		d.log.Info("conntrack: the LRU connection table of an earlier build was replaced by the cache-line table; "+
			"its flows were carried over, and any it took meanwhile are placed again from the lookup tables",
			"carried", n, "slots", d.ConntrackSlots(), "bytes", d.ConntrackBytes())
	}
	if legacyNAT {
		if err := d.markNATEstablished(); err != nil {
			d.ticks.Close()
			d.objs.Close()
			return nil, err
		}
	}
	if err := d.rebuildVIPIndex(); err != nil {
		d.ticks.Close()
		d.ct.unmap()
		d.objs.Close()
		return nil, fmt.Errorf("rebuild vip index: %w", err)
	}
	// Every interface in tx_ports before the program runs on any: it may
	// send a NAT packet out of another one at once.
	if err := d.addTxPorts(opts.Interfaces); err != nil {
		d.ticks.Close()
		d.ct.unmap()
		d.objs.Close()
		return nil, err
	}
	for _, name := range opts.Interfaces {
		if err := d.attach(name); err != nil {
			d.Close()
			return nil, err
		}
	}
	d.log.Info("data plane loaded", append([]any{"pin_path", pinDir, "interfaces", opts.Interfaces,
		"lookup_size", opts.LookupSize, "conntrack_size", opts.ConntrackSize, "conntrack_slots", d.ConntrackSlots(),
		"conntrack_bytes", d.ConntrackBytes(), "half_open_size", d.HalfOpenSize(),
		"snat_ports", opts.SNATPorts.String()}, d.features.logArgs()...)...)
	return d, nil
}

// counterPins are the pinned maps that hold only counters: when a new
// build changes one's size (a drop reason added), its pin is replaced and
// the counters restart from zero, rather than refusing every pin and the
// connection table with them.
var counterPins = []string{xdplbMapDrops, xdplbMapEvents, xdplbMapXdpActions, xdplbMapVipDrops}

func replaceStaleCounterPins(spec *ebpf.CollectionSpec, pinDir string, log *slog.Logger) error {
	for _, name := range counterPins {
		path := filepath.Join(pinDir, name)
		m, err := ebpf.LoadPinnedMap(path, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("load pinned %s: %w", name, err)
		}
		cerr := spec.Maps[name].Compatible(m)
		m.Close()
		if cerr == nil {
			continue
		}
		log.Warn("pinned counters do not match this build: they restart from zero", "map", name, "reason", cerr)
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("replace pinned %s: %w", name, err)
		}
	}
	return nil
}

// pinned reports whether pinDir holds a pin named name.
func pinned(pinDir, name string) bool {
	_, err := os.Stat(filepath.Join(pinDir, name))
	return err == nil
}

// loadSpec returns the program's spec sized for opts, and its named parts.
func loadSpec(opts Options) (*ebpf.CollectionSpec, *xdplbSpecs, error) {
	spec, err := loadXdplb()
	if err != nil {
		return nil, nil, fmt.Errorf("load bpf spec: %w", err)
	}
	var s xdplbSpecs
	if err := spec.Assign(&s); err != nil {
		return nil, nil, fmt.Errorf("bpf spec: %w", err)
	}
	for _, size := range []struct {
		m *ebpf.MapSpec
		n uint32
	}{
		{s.Vips, opts.MaxVIPs},
		{s.VipAddrs, opts.MaxVIPs}, // at most one address per VIP
		{s.VipKeys, opts.MaxVIPs},
		{s.Lookup, opts.MaxVIPs},
		{s.VipStats, opts.MaxVIPs},
		{s.Backends, opts.MaxBackends},
		{s.BackendStats, opts.MaxBackends},
		{s.Conntrack, ctBuckets(opts.ConntrackSize)},
		{s.CtKeys, ctBuckets(opts.ConntrackSize)},
		{s.CtHalf, halfOpenBuckets(opts.HalfOpenSize)},
		{s.NatFlows, opts.ConntrackSize}, // at most one translation per flow
		{s.VipSnat, opts.MaxVIPs},
		{s.VipIcmp, opts.MaxVIPs},
		{s.VipRates, opts.MaxVIPs},
		{s.VipDrops, opts.MaxVIPs * uint32(xdplbDropReasonDROP_REASON_MAX)},
		{s.BackendNh, opts.MaxBackends},
		{s.SchedSets, opts.MaxVIPs},
		{s.SchedCursor, opts.MaxVIPs},
		{s.VipPersist, opts.MaxVIPs},
		{s.BeConns, opts.MaxBackends},
		{s.Persist, persistSize(opts.ConntrackSize)},
	} {
		size.m.MaxEntries = size.n
	}
	s.Lookup.InnerMap.MaxEntries = opts.LookupSize
	if err := s.CfgLookupSize.Set(opts.LookupSize); err != nil {
		return nil, nil, fmt.Errorf("set %s: %w", xdplbVarCfgLookupSize, err)
	}
	if err := s.CfgHalfBuckets.Set(halfOpenBuckets(opts.HalfOpenSize)); err != nil {
		return nil, nil, fmt.Errorf("set %s: %w", xdplbVarCfgHalfBuckets, err)
	}
	if err := s.CfgCtBuckets.Set(ctBuckets(opts.ConntrackSize)); err != nil {
		return nil, nil, fmt.Errorf("set %s: %w", xdplbVarCfgCtBuckets, err)
	}
	return spec, &s, nil
}

// checkLookupCompatible catches a pinned lookup map created for another
// table size or layout (before tables were BPF_F_MMAPABLE): its inner
// template is fixed at creation, so every table we build would be refused
// later. Slot 0 is never a VIP id, so a trial insert there touches nothing
// live. The insert is a batch update where the kernel has one for this
// map, which answers Features.BatchUpdateTables too.
func (d *Datapath) checkLookupCompatible() error {
	inner, err := ebpf.NewMap(d.innerSpec)
	if err != nil {
		return fmt.Errorf("create lookup table: %w", err)
	}
	defer inner.Close()
	_, err = d.objs.Lookup.BatchUpdate([]uint32{0}, []uint32{uint32(inner.FD())}, nil)
	d.features.BatchUpdateTables = !errors.Is(err, ebpf.ErrNotSupported)
	if !d.features.BatchUpdateTables {
		err = d.objs.Lookup.Put(uint32(0), inner)
	}
	if err != nil {
		return fmt.Errorf("%w: pinned lookup map under %s does not take tables of size %d of this build (%v); "+
			"restart with the previous size and build, or remove that directory (this drops the connection table)", ErrIncompatiblePin, d.pinDir, d.opts.LookupSize, err)
	}
	if err := d.objs.Lookup.Delete(uint32(0)); err != nil {
		return fmt.Errorf("remove trial lookup table: %w", err)
	}
	return nil
}

// ensureBPFFS mounts a bpffs at dir unless one is there already (inside
// `ip netns exec` /sys/fs/bpf is not the host's bpffs) and says whether it
// mounted one.
func ensureBPFFS(dir string) (bool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, fmt.Errorf("create bpffs dir: %w", err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return false, fmt.Errorf("statfs %s: %w", dir, err)
	}
	if st.Type == unix.BPF_FS_MAGIC {
		return false, nil
	}
	if err := unix.Mount("bpffs", dir, "bpf", 0, "mode=0700"); err != nil {
		return false, fmt.Errorf("mount bpffs on %s: %w", dir, err)
	}
	return true, nil
}

// Program is the main XDP program, for packet tests.
func (d *Datapath) Program() *ebpf.Program { return d.objs.XdplbMain }

// PinPath is where maps and links are pinned.
func (d *Datapath) PinPath() string { return d.pinDir }

// Close releases handles. Pins and links stay, so forwarding continues and
// the next Load picks them up.
func (d *Datapath) Close() error {
	return errors.Join(d.closeHandles(), d.unlockPins())
}

// unlockPins lets go of the pin dir's lock, once.
func (d *Datapath) unlockPins() error {
	d.mu.Lock()
	f := d.pinLock
	d.pinLock = nil
	d.mu.Unlock()
	if f == nil {
		return nil
	}
	return f.Close()
}

// closeHandles closes the links, maps and programs, keeping the pin dir's
// lock.
func (d *Datapath) closeHandles() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for _, a := range d.links {
		errs = append(errs, a.link.Close())
	}
	d.links = nil
	errs = append(errs, d.ct.unmap(), d.objs.Close(), d.ticks.Close())
	return errors.Join(errs...)
}

// Remove closes all handles, detaches every link pinned under the pin dir
// (not only ours) and unpins every map: a clean uninstall.
func (d *Datapath) Remove() error {
	// The lock is let go last: nobody loads the pins while they go.
	return errors.Join(d.closeHandles(), removePinDir(d.pinDir), d.unlockPins())
}

// RemovePinned detaches and removes what an earlier Load pinned under
// bpffs (the XDP links, the program's maps, the connection table), without
// loading anything: the offline half of a clean uninstall. Removing a
// link's pin drops its last reference, which detaches XDP. It reports
// whether there was anything to remove.
func RemovePinned(bpffs string) (bool, error) {
	if bpffs == "" {
		bpffs = DefaultBPFFS
	}
	var st unix.Statfs_t
	if err := unix.Statfs(bpffs, &st); errors.Is(err, os.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("statfs %s: %w", bpffs, err)
	}
	if st.Type != unix.BPF_FS_MAGIC {
		return false, nil // no bpffs, so no pins of ours
	}
	pinDir := filepath.Join(bpffs, pinSubdir)
	if _, err := os.Stat(pinDir); errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	lock, err := lockPinDir(pinDir)
	if err != nil {
		return false, err
	}
	defer lock.Close()
	return true, removePinDir(pinDir)
}

// lockPinDir takes an exclusive flock on the pin dir, without waiting: the
// process that loaded the pinned maps is their only writer, and nobody
// removes them under it. A second daemon on the same bpffs (with another
// state dir) is refused here rather than fighting over the maps. The
// kernel drops the lock when its holder dies.
func lockPinDir(pinDir string) (*os.File, error) {
	f, err := os.Open(pinDir)
	if err != nil {
		return nil, fmt.Errorf("open pin dir: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s is held by another xdplb process (a daemon on another state dir?)", ErrPinsInUse, pinDir)
		}
		return nil, fmt.Errorf("lock pin dir %s: %w", pinDir, err)
	}
	return f, nil
}

// removePinDir removes pinDir and waits until the XDP links pinned there
// are gone. Removing a pin on bpffs unpins it; a link without pin and fd
// detaches, but the kernel frees it after an RCU grace period, from a work
// queue: the wait makes XDP off when this returns.
func removePinDir(pinDir string) error {
	links, err := pinnedLinks(pinDir)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(pinDir); err != nil {
		return fmt.Errorf("remove %s: %w", pinDir, err)
	}
	for _, l := range links {
		if err := waitDetached(l, 5*time.Second); err != nil {
			return err
		}
	}
	return nil
}

// pinnedLinks returns what is known of the XDP links pinned in pinDir.
func pinnedLinks(pinDir string) ([]link.Info, error) {
	pins, err := filepath.Glob(linkPinPath(pinDir, "*"))
	if err != nil {
		return nil, err
	}
	var infos []link.Info
	for _, pin := range pins {
		l, err := link.LoadPinnedLink(pin, nil)
		if err != nil {
			return nil, fmt.Errorf("load pinned link %s: %w", pin, err)
		}
		info, err := l.Info()
		l.Close()
		if err != nil {
			return nil, fmt.Errorf("pinned link %s info: %w", pin, err)
		}
		infos = append(infos, *info)
	}
	return infos, nil
}

// waitDetached waits until the link is gone and its program is off its
// interface. Both are needed: the kernel frees a link's id before it
// detaches the program.
func waitDetached(l link.Info, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		gone := false
		if ll, err := link.NewFromID(l.ID); errors.Is(err, os.ErrNotExist) {
			gone = true
		} else if err == nil {
			ll.Close()
		}
		if gone && !xdpProgOn(l) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("xdp link %d still attached %s after its pin was removed", l.ID, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// xdpProgOn reports whether l's program is still attached to l's
// interface, as netlink shows it.
func xdpProgOn(l link.Info) bool {
	xdp := l.XDP()
	if xdp == nil {
		return false
	}
	nl, err := netlink.LinkByIndex(int(xdp.Ifindex))
	if err != nil {
		return false // the interface is gone, and its program with it
	}
	a := nl.Attrs().Xdp
	return a != nil && a.Attached && a.ProgId == uint32(l.Program)
}

// LookupTableSize is the size of every lookup table.
func (d *Datapath) LookupTableSize() uint32 { return d.opts.LookupSize }

// MaxVIPs bounds VIP ids: 1..MaxVIPs()-1.
func (d *Datapath) MaxVIPs() uint32 { return d.opts.MaxVIPs }

// MaxBackends bounds backend ids: 1..MaxBackends()-1.
func (d *Datapath) MaxBackends() uint32 { return d.opts.MaxBackends }

// ConntrackSize is the connection table's size in flows (--conntrack-size),
// its design load: ConntrackSlots has room for more.
func (d *Datapath) ConntrackSize() uint32 { return d.opts.ConntrackSize }

// HalfOpenSize is how many half-open flows the half-open table holds:
// Options.HalfOpenSize in whole buckets.
func (d *Datapath) HalfOpenSize() uint32 { return halfOpenBuckets(d.opts.HalfOpenSize) * halfWays }
