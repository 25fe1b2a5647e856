package apiserverdisco

import (
	"fmt"
	"math"
	"slices"
	"testing"
	"time"
)

// step feeds the debouncer a set (or, with tick, only the passage of time)
// at a given offset and says what it must decide.
type step struct {
	at      time.Duration
	set     []string // nil with tick: a tick
	tick    bool
	deliver []string // nil: no delivery
	wake    time.Duration
	noWake  bool
}

func TestDebouncer(t *testing.T) {
	const D = 100 * time.Millisecond
	A, B, C := "a:1", "b:1", "c:1"
	for _, tc := range []struct {
		name     string
		holdDown time.Duration
		debounce time.Duration
		steps    []step
	}{
		{name: "not yet set waits; the first set is delivered at once, sorted and de-duplicated", debounce: D, steps: []step{
			{at: 0, set: []string{}, noWake: true},
			{at: 10 * time.Millisecond, set: []string{B, A, B}, deliver: []string{A, B}, noWake: true},
		}},
		{name: "an added address is delivered at once", debounce: D, steps: []step{
			{at: 0, set: []string{A}, deliver: []string{A}, noWake: true},
			{at: 10 * time.Millisecond, set: []string{A, B}, deliver: []string{A, B}, noWake: true},
			{at: 20 * time.Millisecond, set: []string{C, A, B}, deliver: []string{A, B, C}, noWake: true},
		}},
		{name: "a removed address waits for the debounce", debounce: D, steps: []step{
			{at: 0, set: []string{A, B}, deliver: []string{A, B}, noWake: true},
			{at: 10 * time.Millisecond, set: []string{A}, wake: 110 * time.Millisecond},
			{at: 109 * time.Millisecond, tick: true, wake: 110 * time.Millisecond},
			{at: 110 * time.Millisecond, tick: true, deliver: []string{A}, noWake: true},
		}},
		{name: "a replaced address waits for the debounce", debounce: D, steps: []step{
			{at: 0, set: []string{A}, deliver: []string{A}},
			{at: 10 * time.Millisecond, set: []string{B}, wake: 110 * time.Millisecond},
			{at: 110 * time.Millisecond, tick: true, deliver: []string{B}, noWake: true},
		}},
		{name: "publish, unpublish, publish: one delivery", debounce: D, steps: []step{
			{at: 0, set: []string{A}, deliver: []string{A}, noWake: true},
			{at: 10 * time.Millisecond, set: []string{A, B}, deliver: []string{A, B}, noWake: true},
			{at: 20 * time.Millisecond, set: []string{A}, wake: 120 * time.Millisecond},
			{at: 30 * time.Millisecond, set: []string{B, A}, noWake: true},
			{at: 500 * time.Millisecond, tick: true, noWake: true},
		}},
		{name: "unpublish, publish: no delivery", debounce: D, steps: []step{
			{at: 0, set: []string{A, B}, deliver: []string{A, B}},
			{at: 10 * time.Millisecond, set: []string{A}, wake: 110 * time.Millisecond},
			{at: 20 * time.Millisecond, set: []string{A, B}, noWake: true},
			{at: 500 * time.Millisecond, tick: true, noWake: true},
		}},
		{name: "an addition while a removal is pending is debounced with it", debounce: D, steps: []step{
			{at: 0, set: []string{A, B}, deliver: []string{A, B}},
			{at: 10 * time.Millisecond, set: []string{A}, wake: 110 * time.Millisecond},
			{at: 20 * time.Millisecond, set: []string{A, C}, wake: 120 * time.Millisecond},
			{at: 120 * time.Millisecond, tick: true, deliver: []string{A, C}},
		}},
		{name: "the same set again is not a change", debounce: D, steps: []step{
			{at: 0, set: []string{A}, deliver: []string{A}},
			{at: 10 * time.Millisecond, set: []string{A, A}, noWake: true},
		}},
		{name: "a set that keeps changing is delivered after five debounces", debounce: D, steps: []step{
			{at: 0, set: []string{A, B, C}, deliver: []string{A, B, C}},
			{at: 0, set: []string{B}, wake: 100 * time.Millisecond},
			{at: 90 * time.Millisecond, set: []string{C}, wake: 190 * time.Millisecond},
			{at: 180 * time.Millisecond, set: []string{B}, wake: 280 * time.Millisecond},
			{at: 270 * time.Millisecond, set: []string{C}, wake: 370 * time.Millisecond},
			{at: 360 * time.Millisecond, set: []string{B}, wake: 460 * time.Millisecond},
			{at: 450 * time.Millisecond, set: []string{C}, wake: 500 * time.Millisecond},
			{at: 500 * time.Millisecond, tick: true, deliver: []string{C}, noWake: true},
		}},
		{name: "an empty set is delivered after the debounce without hold-down", debounce: D, steps: []step{
			{at: 0, set: []string{A}, deliver: []string{A}},
			{at: 0, set: []string{}, wake: 100 * time.Millisecond},
			{at: 100 * time.Millisecond, tick: true, deliver: []string{}, noWake: true},
		}},
		{name: "an empty set waits for the hold-down, and a return cancels it", debounce: D, holdDown: time.Second, steps: []step{
			{at: 0, set: []string{A}, deliver: []string{A}},
			{at: 0, set: []string{}, wake: time.Second},
			{at: 100 * time.Millisecond, tick: true, wake: time.Second},
			{at: 900 * time.Millisecond, set: []string{A}, noWake: true},
			{at: 2 * time.Second, set: []string{}, wake: 3 * time.Second},
			{at: 3 * time.Second, tick: true, deliver: []string{}},
		}},
		{name: "hold-down applies only to empty sets", debounce: D, holdDown: time.Minute, steps: []step{
			{at: 0, set: []string{A, B}, deliver: []string{A, B}},
			{at: 0, set: []string{A}, wake: 100 * time.Millisecond},
			{at: 100 * time.Millisecond, tick: true, deliver: []string{A}},
			{at: 100 * time.Millisecond, set: []string{}, wake: time.Minute + 100*time.Millisecond},
			{at: time.Minute, set: []string{A, B}, deliver: []string{A, B}, noWake: true},
		}},
		{name: "a huge debounce: five periods saturate instead of overflowing", debounce: 1 << 61, steps: []step{
			{at: 0, set: []string{A, B}, deliver: []string{A, B}, noWake: true},
			{at: 10 * time.Millisecond, set: []string{A}, wake: 10*time.Millisecond + 1<<61},
			{at: time.Hour, tick: true, wake: 10*time.Millisecond + 1<<61},
			{at: time.Hour, set: []string{B}, wake: time.Hour + 1<<61},
		}},
		{name: "the longest debounce", debounce: math.MaxInt64 - time.Hour, steps: []step{
			{at: 0, set: []string{A, B}, deliver: []string{A, B}, noWake: true},
			{at: time.Hour, set: []string{A}, wake: math.MaxInt64},
			{at: 2 * time.Hour, tick: true, wake: math.MaxInt64},
		}},
		{name: "zero debounce delivers every change at once", debounce: 0, steps: []step{
			{at: 0, set: []string{A}, deliver: []string{A}},
			{at: 0, set: []string{A, B}, deliver: []string{A, B}},
			{at: 0, set: []string{}, deliver: []string{}},
			{at: 0, set: []string{C}, deliver: []string{C}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t0 := time.Unix(1000, 0)
			d := &debouncer{debounce: tc.debounce, holdDown: tc.holdDown}
			for i, s := range tc.steps {
				var got decision
				if s.tick {
					got = d.tick(t0.Add(s.at))
				} else {
					in := slices.Clone(s.set)
					got = d.update(t0.Add(s.at), in)
					if len(in) > 0 && len(got.set) > 0 && &in[0] == &got.set[0] {
						t.Fatalf("step %d: the delivered set aliases the caller's slice", i)
					}
				}
				if (s.deliver != nil) != got.deliver || (s.deliver != nil && !slices.Equal(s.deliver, got.set)) {
					t.Fatalf("step %d (%+v): deliver=%v %q, want %q", i, s, got.deliver, got.set, s.deliver)
				}
				switch {
				case s.noWake && !got.wake.IsZero():
					t.Fatalf("step %d: wake at %s, want none", i, got.wake.Sub(t0))
				case s.wake != 0 && !got.wake.Equal(t0.Add(s.wake)):
					t.Fatalf("step %d: wake %s, want %s", i, fmt.Sprint(got.wake.Sub(t0)), s.wake)
				}
			}
		})
	}
}

func TestIsSuperset(t *testing.T) {
	for _, tc := range []struct {
		a, b []string
		want bool
	}{
		{nil, nil, true},
		{[]string{"a"}, nil, true},
		{nil, []string{"a"}, false},
		{[]string{"a", "b", "c"}, []string{"a", "c"}, true},
		{[]string{"a", "c"}, []string{"a", "b"}, false},
		{[]string{"b", "c"}, []string{"a"}, false},
		{[]string{"a"}, []string{"a", "b"}, false},
	} {
		if got := isSuperset(tc.a, tc.b); got != tc.want {
			t.Errorf("isSuperset(%q, %q) = %v", tc.a, tc.b, got)
		}
	}
}
