package tooken

import (
	"fmt"
	"strings"
	"time"
)

// The rotation schedule, as pure functions of their inputs: a period counted
// from when the secret was last set, a backoff after failures, and a daily
// UTC window that scheduled rotations keep to.

const (
	minRotationPeriod = time.Minute
	minWindowLength   = 5 * time.Minute

	rotationBackoffBase = time.Minute
	rotationBackoffMax  = time.Hour
)

func validateRotationPeriod(p time.Duration) error {
	if p < 0 || (p > 0 && p < minRotationPeriod) {
		return fmt.Errorf("rotation_period: must be 0 (off) or at least %s", minRotationPeriod)
	}
	return nil
}

// nextPeriodicRotation is when a period schedule rotates next (zero when
// period is 0: off): period after the secret was set (now when that is
// unknown), no earlier than a backoff retry, moved into the window.
func nextPeriodicRotation(period time.Duration, secretSetAt time.Time, retryAt *time.Time, w dailyWindow, now time.Time) time.Time {
	if period <= 0 {
		return time.Time{}
	}
	due := now
	if !secretSetAt.IsZero() {
		due = secretSetAt.Add(period)
	}
	if retryAt != nil && retryAt.After(due) {
		due = *retryAt
	}
	return w.next(due.UTC())
}

// rotationBackoff is the wait after the nth failed rotation in a row
// (n >= 1): 1m, 2m, 4m, ... at most 1h.
func rotationBackoff(failures int) time.Duration {
	if n := failures - 1; n < 10 {
		return min(rotationBackoffBase<<max(n, 0), rotationBackoffMax)
	}
	return rotationBackoffMax
}

// dailyWindow is a daily UTC window [start, end), as offsets from midnight;
// end < start wraps past midnight. The zero value (always) has set false.
type dailyWindow struct {
	set        bool
	start, end time.Duration
}

// parseWindow parses "HH:MM-HH:MM"; "" is the always-open window.
func parseWindow(s string) (dailyWindow, error) {
	if s == "" {
		return dailyWindow{}, nil
	}
	bad := fmt.Errorf(`rotation_window: %q is not a daily UTC window "HH:MM-HH:MM"`, s)
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return dailyWindow{}, bad
	}
	start, err1 := parseClock(strings.TrimSpace(a))
	end, err2 := parseClock(strings.TrimSpace(b))
	if err1 != nil || err2 != nil {
		return dailyWindow{}, bad
	}
	w := dailyWindow{set: true, start: start, end: end}
	if w.length() < minWindowLength {
		return dailyWindow{}, fmt.Errorf("rotation_window: %q must be at least %s long", s, minWindowLength)
	}
	return w, nil
}

func parseClock(s string) (time.Duration, error) {
	t, err := time.Parse("15:04", s)
	if err != nil {
		return 0, err
	}
	return time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute, nil
}

func (w dailyWindow) length() time.Duration {
	l := w.end - w.start
	if l <= 0 {
		l += 24 * time.Hour
	}
	return l
}

func midnight(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// contains tells whether t falls inside the window.
func (w dailyWindow) contains(t time.Time) bool {
	if !w.set {
		return true
	}
	off := t.UTC().Sub(midnight(t))
	if w.start < w.end {
		return off >= w.start && off < w.end
	}
	return off >= w.start || off < w.end
}

// next is the first instant at or after t inside the window.
func (w dailyWindow) next(t time.Time) time.Time {
	if w.contains(t) {
		return t
	}
	s := midnight(t).Add(w.start)
	if s.Before(t) {
		s = s.Add(24 * time.Hour)
	}
	return s
}
