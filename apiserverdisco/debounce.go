package apiserverdisco

import (
	"math"
	"slices"
	"time"
)

// debouncer decides when a Watcher delivers a set. It is a pure state
// machine driven by the times it is given, so its rules are tested without
// clocks or goroutines:
//
//   - sets are sorted and de-duplicated before anything else;
//   - until a non-empty set has been delivered, an empty set means "not yet
//     set" and is ignored; the first non-empty set is delivered at once;
//   - a set that only adds addresses to the delivered one is delivered at
//     once: a new apiserver is usable without delay, and more endpoints
//     never hurt;
//   - any other different set (one that drops an address) is delivered once
//     it has stayed unchanged for the debounce, or at the latest
//     maxDelayFactor debounces after the delivered set was first left;
//   - a set that returns to the delivered one cancels the pending delivery,
//     so an apiserver that flaps yields one delivery or none;
//   - an empty set must also have stayed empty for the hold-down.
type debouncer struct {
	debounce, holdDown time.Duration

	delivered   bool
	cur         []string  // the last delivered set
	want        []string  // the latest set the source reported
	wantSince   time.Time // when want last changed
	firstChange time.Time // when want first differed from cur
}

// decision is what the Watcher should do next: deliver set now, and/or
// call tick again at wake (zero: nothing pending).
type decision struct {
	deliver bool
	set     []string
	wake    time.Time
}

// update takes a set reported by the source at now.
func (d *debouncer) update(now time.Time, addrs []string) decision {
	addrs = normalizeSet(addrs)
	if !d.delivered {
		if len(addrs) == 0 {
			return decision{}
		}
		d.want, d.wantSince = addrs, now
		return d.deliver()
	}
	if !slices.Equal(addrs, d.want) {
		if slices.Equal(d.want, d.cur) {
			d.firstChange = now
		}
		d.want, d.wantSince = addrs, now
	}
	return d.tick(now)
}

// tick re-evaluates the pending set at now.
func (d *debouncer) tick(now time.Time) decision {
	if !d.delivered || slices.Equal(d.want, d.cur) {
		return decision{}
	}
	if isSuperset(d.want, d.cur) {
		return d.deliver()
	}
	due := d.wantSince.Add(d.debounce)
	if limit := d.firstChange.Add(maxDelay(d.debounce)); limit.Before(due) {
		due = limit
	}
	if len(d.want) == 0 {
		if h := d.wantSince.Add(d.holdDown); h.After(due) {
			due = h
		}
	}
	if now.Before(due) {
		return decision{wake: due}
	}
	return d.deliver()
}

func (d *debouncer) deliver() decision {
	d.cur, d.delivered = d.want, true
	return decision{deliver: true, set: d.cur}
}

// maxDelay is maxDelayFactor × debounce, saturated at the longest
// time.Duration instead of overflowing (a huge debounce must not become a
// negative limit, which would deliver at once).
func maxDelay(debounce time.Duration) time.Duration {
	if debounce > math.MaxInt64/maxDelayFactor {
		return math.MaxInt64
	}
	return maxDelayFactor * debounce
}

// normalizeSet returns a sorted, de-duplicated copy of addrs.
func normalizeSet(addrs []string) []string {
	out := slices.Clone(addrs)
	slices.Sort(out)
	out = slices.Compact(out)
	if out == nil {
		out = []string{}
	}
	return out
}

// isSuperset reports whether sorted set a contains every element of sorted
// set b.
func isSuperset(a, b []string) bool {
	i := 0
	for _, x := range b {
		for i < len(a) && a[i] < x {
			i++
		}
		if i == len(a) || a[i] != x {
			return false
		}
		i++
	}
	return true
}
