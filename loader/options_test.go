package loader

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

// None of these needs root: Defaults, Validate and loadSpec touch no
// kernel object, and Load refuses invalid options before it does.

func TestDefaultsFillsEveryField(t *testing.T) {
	var o Options
	o.Defaults()
	v := reflect.ValueOf(o)
	for i := range v.NumField() {
		name := v.Type().Field(i).Name
		if name == "Interfaces" {
			continue // no default: the daemon requires them, Load takes none
		}
		if v.Field(i).IsZero() {
			t.Errorf("Defaults left %s zero", name)
		}
	}
	want := Options{
		BPFFS:           DefaultBPFFS,
		XDPMode:         DefaultXDPMode,
		LookupSize:      DefaultLookupSize,
		ConntrackSize:   DefaultConntrackSize,
		MaxVIPs:         DefaultMaxVIPs,
		MaxBackends:     DefaultMaxBackends,
		SNATPorts:       DefaultSNATPorts,
		Logger:          o.Logger,
		HalfOpenTimeout: DefaultHalfOpenTimeout,
		HalfOpenSize:    DefaultConntrackSize / 4,
	}
	if !reflect.DeepEqual(o, want) {
		t.Errorf("Defaults() = %+v, want %+v", o, want)
	}
	if err := o.validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
	o.Interfaces = []string{"eth0"}
	if err := o.Validate(); err != nil {
		t.Errorf("defaults with one interface do not validate: %v", err)
	}
}

func TestDefaultsKeepsSetFields(t *testing.T) {
	set := Options{BPFFS: "/b", Interfaces: []string{"eth0"}, XDPMode: XDPModeNative, LookupSize: 251,
		ConntrackSize: 4096, MaxVIPs: 16, MaxBackends: 64, SNATPorts: PortRange{Lo: 1000, Hi: 1001},
		HalfOpenTimeout: 5 * time.Second, HalfOpenSize: 100, Logger: testOptions("").Logger}
	o := set
	o.Defaults()
	if !reflect.DeepEqual(o, set) {
		t.Errorf("Defaults() changed %+v to %+v", set, o)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Options)
		want string // "" for valid
	}{
		{"defaults", func(*Options) {}, ""},
		{"native", func(o *Options) { o.XDPMode = XDPModeNative }, ""},
		{"generic", func(o *Options) { o.XDPMode = XDPModeGeneric }, ""},
		{"small prime", func(o *Options) { o.LookupSize = 251 }, ""},
		{"two interfaces", func(o *Options) { o.Interfaces = []string{"eth0", "eth1"} }, ""},
		{"xdp mode", func(o *Options) { o.XDPMode = "fast" }, `--xdp-mode "fast": want native, generic or auto`},
		{"xdp mode empty", func(o *Options) { o.XDPMode = "" }, `--xdp-mode "": want native, generic or auto`},
		{"xdp mode case", func(o *Options) { o.XDPMode = "Native" }, `--xdp-mode "Native": want native, generic or auto`},
		{"lookup size composite", func(o *Options) { o.LookupSize = 65536 }, "--maglev-size 65536: must be a prime number (e.g. 65537)"},
		{"lookup size zero", func(o *Options) { o.LookupSize = 0 }, "--maglev-size 0: must be a prime number (e.g. 65537)"},
		{"lookup size one", func(o *Options) { o.LookupSize = 1 }, "--maglev-size 1: must be a prime number (e.g. 65537)"},
		{"conntrack size zero", func(o *Options) { o.ConntrackSize = 0 }, "--conntrack-size 0: must be at least 1"},
		{"no interface", func(o *Options) { o.Interfaces = nil }, "at least one --iface is required"},
		{"interface twice", func(o *Options) { o.Interfaces = []string{"eth0", "eth1", "eth0"} }, "--iface eth0 given twice"},
		{"bpffs empty", func(o *Options) { o.BPFFS = "" }, `--bpffs "": want a directory`},
		{"max vips", func(o *Options) { o.MaxVIPs = 1 }, "max vips 1 and max backends 65536 must be at least 2"},
		{"max backends", func(o *Options) { o.MaxBackends = 1 }, "max vips 1024 and max backends 1 must be at least 2"},
		{"half-open short", func(o *Options) { o.HalfOpenTimeout = time.Second / 2 }, "--half-open-timeout 500ms: want 1s to 15m0s"},
		{"half-open long", func(o *Options) { o.HalfOpenTimeout = time.Hour }, "--half-open-timeout 1h0m0s: want 1s to 15m0s"},
		{"half-open table huge", func(o *Options) { o.HalfOpenSize = 1<<25 + 1 }, "half-open table of 33554433 flows: want at most 33554432"},
		{"conntrack huge", func(o *Options) { o.ConntrackSize = 1 << 31; o.HalfOpenSize = DefaultHalfOpenSize(o.ConntrackSize) }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := Options{Interfaces: []string{"eth0"}}
			o.Defaults()
			tt.edit(&o)
			err := o.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || err.Error() != tt.want {
				t.Fatalf("Validate() = %v, want %q", err, tt.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Validate() = %v, want ErrInvalid", err)
			}
		})
	}
}

// Load refuses what Validate refuses, in the same words, before it
// touches the kernel.
func TestLoadRefusesInvalid(t *testing.T) {
	for _, edit := range []func(*Options){
		func(o *Options) { o.XDPMode = "fast" },
		func(o *Options) { o.LookupSize = 100 },
		func(o *Options) { o.Interfaces = []string{"lo", "lo"} },
		func(o *Options) { o.MaxBackends = 1 },
	} {
		o := testOptions(t.TempDir())
		o.Interfaces = []string{"lo"}
		o.Defaults()
		edit(&o)
		verr := o.Validate()
		if verr == nil {
			t.Fatalf("%+v validates", o)
		}
		if _, err := Load(o); err == nil || err.Error() != verr.Error() || !errors.Is(err, ErrInvalid) {
			t.Errorf("Load() = %v, want %q", err, verr)
		}
	}
}

func TestValidateNoInterfaceForLoad(t *testing.T) {
	o := Options{}
	o.Defaults()
	if err := o.validate(); err != nil {
		t.Errorf("Load's checks refuse no interface: %v", err)
	}
}

func TestCheckInterfaces(t *testing.T) {
	if err := (Options{Interfaces: []string{"lo"}}).CheckInterfaces(); err != nil {
		t.Errorf("lo: %v", err)
	}
	err := (Options{Interfaces: []string{"lo", "nosuch0"}}).CheckInterfaces()
	if err == nil || err.Error() != "interface nosuch0 not found" {
		t.Errorf("nosuch0: %v, want %q", err, "interface nosuch0 not found")
	}
	o := testOptions(t.TempDir())
	o.Interfaces = []string{"nosuch0"}
	if _, err := Load(o); err == nil || err.Error() != "interface nosuch0 not found" {
		t.Errorf("Load with nosuch0: %v, want %q", err, "interface nosuch0 not found")
	}
}

func TestParseXDPMode(t *testing.T) {
	for _, m := range []XDPMode{XDPModeNative, XDPModeGeneric, XDPModeAuto} {
		if got, err := ParseXDPMode(string(m)); got != m || err != nil {
			t.Errorf("ParseXDPMode(%q) = %q, %v", m, got, err)
		}
	}
	got, err := ParseXDPMode("drv")
	if got != "" || !errors.Is(err, ErrInvalid) || err.Error() != `--xdp-mode "drv": want native, generic or auto` {
		t.Errorf(`ParseXDPMode("drv") = %q, %v`, got, err)
	}
}

func TestIsPrime(t *testing.T) {
	for _, p := range []uint32{2, 3, 5, 7, 11, 13, 97, 251, 1009, DefaultLookupSize, 4294967291} {
		if !IsPrime(p) {
			t.Errorf("IsPrime(%d) = false", p)
		}
	}
	for _, n := range []uint32{0, 1, 4, 9, 15, 65536, 65535, 1 << 20, 4294967295} {
		if IsPrime(n) {
			t.Errorf("IsPrime(%d) = true", n)
		}
	}
	// Against a sieve.
	const n = 10000
	composite := make([]bool, n)
	composite[0], composite[1] = true, true
	for i := 2; i*i < n; i++ {
		for j := i * i; j < n; j += i {
			composite[j] = true
		}
	}
	for i := range n {
		if IsPrime(uint32(i)) == composite[i] {
			t.Fatalf("IsPrime(%d) = %v", i, !composite[i])
		}
	}
}

// loadSpec sizes the maps through the generated names.
func TestLoadSpecSizes(t *testing.T) {
	o := testOptions("")
	o.Defaults() // HalfOpenSize
	spec, specs, err := loadSpec(o)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint32{
		xdplbMapVips:         o.MaxVIPs,
		xdplbMapVipAddrs:     o.MaxVIPs,
		xdplbMapVipKeys:      o.MaxVIPs,
		xdplbMapLookup:       o.MaxVIPs,
		xdplbMapVipStats:     o.MaxVIPs,
		xdplbMapBackends:     o.MaxBackends,
		xdplbMapBackendStats: o.MaxBackends,
		xdplbMapConntrack:    ctBuckets(o.ConntrackSize),
		xdplbMapCtKeys:       ctBuckets(o.ConntrackSize),
		xdplbMapCtHalf:       (o.HalfOpenSize + 7) / 8,
	}
	for name, n := range want {
		if got := spec.Maps[name].MaxEntries; got != n {
			t.Errorf("map %s: %d entries, want %d", name, got, n)
		}
	}
	if got := specs.Lookup.InnerMap.MaxEntries; got != o.LookupSize {
		t.Errorf("lookup tables: %d entries, want %d", got, o.LookupSize)
	}
	var size uint32
	if err := specs.CfgLookupSize.Get(&size); err != nil || size != o.LookupSize {
		t.Errorf("cfg_lookup_size = %d (%v), want %d", size, err, o.LookupSize)
	}
}
