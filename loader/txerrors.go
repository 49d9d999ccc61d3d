package loader

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"

	"github.com/safchain/ethtool"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// The program counts its verdicts (ActionCounters), not what becomes of
// the frames afterwards: a frame returned with XDP_TX or redirected can
// still be refused by the driver that should send it (its ring is full,
// or a veth whose peer runs no XDP has nowhere to put it), and is then
// lost. Drivers count those in their ethtool statistics (`ethtool -S`),
// under names of their own; DriverTxErrors reads them.
//
// Which counters are summed (txErrorCounters), by the words of their
// names (split at every character that is not a letter, lower-cased):
//
//  1. those with the word "xdp", a word of sending (tx, xmit, redirect)
//     and a word of failure (err, errs, error, errors, fail, fails,
//     failed, drop, drops, full): veth's rx_queue_N_xdp_tx_errors (XDP_TX
//     refused) and tx_queue_N_xdp_xmit_errors (redirects into the
//     interface refused), virtio_net's xdp_tx_drops of each transmit
//     queue, mlx5's rx_xdp_tx_err, rx_xdp_tx_full, tx_xdp_err and
//     tx_xdp_full, mlx4's rx_xdp_tx_full and rx_xdp_redirect_fail,
//     mvneta's xdp_tx_err and xdp_xmit_err; not XDP_DROP's counters
//     (rx_queue_N_xdp_drops), which have no word of sending;
//  2. but not a queue's or channel's share of a total the driver also
//     gives: a counter whose name has a number is left out when another
//     counter's name has the same words less the numbers and the words
//     queue, q, ch, channel and ring (mlx5's rx3_xdp_tx_err beside
//     rx_xdp_tx_err);
//  3. and, for veth only, rx_queue_N_drops: a veth counts there the
//     redirects it could not hand on (on Linux 6.x a veth is no redirect
//     target unless its peer runs XDP or has GRO on) and the XDP_TX frames
//     it could not queue.
//
// A driver with no such counter (i40e, ixgbe, ice) reports nothing.

// txSendWords, txFailWords and queueWords are the words of the rule above.
var (
	txSendWords = []string{"tx", "xmit", "redirect"}
	txFailWords = []string{"err", "errs", "error", "errors", "fail", "fails", "failed", "drop", "drops", "full"}
	queueWords  = []string{"queue", "q", "ch", "channel", "ring"}
)

// nameWords splits a statistic's name into lower-case words of letters;
// numbers set hasNumber.
func nameWords(name string) (words []string, hasNumber bool) {
	words = strings.FieldsFunc(strings.ToLower(name), func(r rune) bool {
		if unicode.IsDigit(r) {
			hasNumber = true
		}
		return !unicode.IsLetter(r)
	})
	return words, hasNumber
}

func hasAny(words, of []string) bool {
	return slices.ContainsFunc(words, func(w string) bool { return slices.Contains(of, w) })
}

// isTxErrorName is rule 1: an XDP transmit error counter.
func isTxErrorName(words []string) bool {
	return slices.Contains(words, "xdp") && hasAny(words, txSendWords) && hasAny(words, txFailWords)
}

// totalKey is a name's words less the queue words, so that a queue's
// share and the total have the same key (rule 2).
func totalKey(words []string) string {
	return strings.Join(slices.DeleteFunc(slices.Clone(words), func(w string) bool { return slices.Contains(queueWords, w) }), "_")
}

// isVethDrops is rule 3: veth's rx_queue_N_drops.
func isVethDrops(driver string, words []string) bool {
	return driver == "veth" && slices.Equal(words, []string{"rx", "queue", "drops"})
}

// txErrorCounters sums the driver's statistics that count XDP frames it
// refused to send (the rule above) and returns the names it summed,
// sorted; none: the driver has no such counter.
func txErrorCounters(driver string, stats map[string]uint64) (sum uint64, names []string) {
	totals := map[string]bool{}
	for name := range stats {
		if words, num := nameWords(name); !num && isTxErrorName(words) {
			totals[totalKey(words)] = true
		}
	}
	for name, v := range stats {
		words, num := nameWords(name)
		switch {
		case isVethDrops(driver, words):
		case !isTxErrorName(words):
			continue
		case num && totals[totalKey(words)]:
			continue
		}
		sum += v
		names = append(names, name)
	}
	slices.Sort(names)
	return sum, names
}

// driverStats reads the driver's name and its ethtool statistics of the
// interface called name in the caller's network namespace. A driver
// without statistics gives unix.EOPNOTSUPP.
func driverStats(name string) (driver string, stats map[string]uint64, err error) {
	e, err := ethtool.NewEthtool()
	if err != nil {
		return "", nil, fmt.Errorf("ethtool socket: %w", err)
	}
	defer e.Close()
	if driver, err = e.DriverName(name); err != nil {
		return "", nil, fmt.Errorf("driver of %s: %w", name, err)
	}
	if stats, err = e.Stats(name); err != nil {
		return "", nil, fmt.Errorf("ethtool statistics of %s: %w", name, err)
	}
	return driver, stats, nil
}

// DriverTxErrors reads, for every interface the program is attached to in
// native mode, what its driver refused to send of the frames returned with
// XDP_TX or redirected (see txErrorCounters), as the driver counts it:
// since the interface was created, whichever program sent the frames. An
// interface whose driver has no such counter is left out, and so is one
// in generic mode: there XDP_TX and redirects go through the kernel's
// transmit path, whose losses the driver's XDP counters do not see.
func (d *Datapath) DriverTxErrors() ([]TxErrorCount, error) {
	d.mu.Lock()
	ifindexes := make([]int, 0, len(d.links))
	for _, a := range d.links {
		ifindexes = append(ifindexes, a.ifindex)
	}
	d.mu.Unlock()

	var out []TxErrorCount
	var errs []error
	for _, ifindex := range ifindexes {
		n, ok, err := driverTxErrors(ifindex)
		if err != nil {
			errs = append(errs, err)
		} else if ok {
			out = append(out, TxErrorCount{Ifindex: uint32(ifindex), Count: n})
		}
	}
	return out, errors.Join(errs...)
}

// driverTxErrors is DriverTxErrors of one interface; ok is false when it
// has nothing to report (gone, generic mode, no such counter).
func driverTxErrors(ifindex int) (n uint64, ok bool, err error) {
	l, err := netlink.LinkByIndex(ifindex)
	if errors.As(err, &netlink.LinkNotFoundError{}) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("interface %d: %w", ifindex, err)
	}
	if xdp := l.Attrs().Xdp; xdp == nil || !xdp.Attached || xdp.AttachMode != nl.XDP_ATTACHED_DRV {
		return 0, false, nil
	}
	driver, stats, err := driverStats(l.Attrs().Name)
	if errors.Is(err, unix.EOPNOTSUPP) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	n, names := txErrorCounters(driver, stats)
	return n, len(names) > 0, nil
}
