package tooken

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/rotation"
	"github.com/robfig/cron/v3"
)

// The rotation schedule, as pure functions of their inputs: a period counted
// from when the secret was last set, or a cron spec (static roles), a
// backoff after failures, and a daily UTC window that scheduled rotations
// keep to.

const (
	minRotationPeriod = time.Minute
	minWindowLength   = 5 * time.Minute

	rotationBackoffBase = time.Minute
	rotationBackoffMax  = time.Hour

	maxCronSpecLen = 100
)

func validateRotationPeriod(p time.Duration) error {
	if p < 0 || (p > 0 && p < minRotationPeriod) {
		return fmt.Errorf("rotation_period: must be 0 (off) or at least %s", humanDuration(minRotationPeriod))
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
	bad := fmt.Errorf(`rotation_window: %s is not a daily UTC window "HH:MM-HH:MM"`, quoteShort(s))
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
		return dailyWindow{}, fmt.Errorf("rotation_window: %s must be at least %s long", quoteShort(s), humanDuration(minWindowLength))
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

// parseCronSchedule parses a rotation_schedule: a standard 5-field cron spec
// (minute hour day-of-month month day-of-week), in UTC, with the SDK's
// parser. Time zone prefixes and @descriptors are refused, and so is a spec
// that never fires (February 30). The errors name the field at fault and its
// range, in the engine's words (cronFormProblem, cronFieldProblem). A valid
// spec is parsed once: a stored role's schedule is parsed on every read.
func parseCronSchedule(spec string) (*cron.SpecSchedule, error) {
	if len(spec) > maxCronSpecLen {
		return nil, fmt.Errorf("rotation_schedule: at most %d characters", maxCronSpecLen)
	}
	if why := cronFormProblem(spec); why != "" {
		return nil, fmt.Errorf("rotation_schedule: %s", why)
	}
	sched, err := rotation.DefaultScheduler.Parse(spec)
	if err != nil {
		if why := cronFieldProblem(spec); why != "" {
			return nil, fmt.Errorf("rotation_schedule: %s", why)
		}
		// Every field parses alone: should not happen.
		return nil, fmt.Errorf("rotation_schedule: %q is not a 5-field cron spec %s", spec, cronFieldsHint)
	}
	if sched.Next(time.Now().UTC()).IsZero() {
		return nil, fmt.Errorf("rotation_schedule: %q never fires: no month has that day-of-month (e.g. the 30th of February); pick a day that exists", spec)
	}
	return sched, nil
}

// cronFieldsHint is how a cron spec is written, for a message.
const cronFieldsHint = `"minute hour day-of-month month day-of-week" (UTC), e.g. "0 3 * * *" for every day at 03:00`

// cronFields are the fields of a standard cron spec, in order, with what
// each accepts besides *, lists (1,5), ranges (1-5) and steps (*/2).
var cronFields = []struct{ name, values string }{
	{"minute", "0-59"},
	{"hour", "0-23"},
	{"day-of-month", "1-31"},
	{"month", "1-12 or JAN-DEC"},
	{"day-of-week", "0-6 or SUN-SAT, 0 being Sunday"},
}

// cronDescriptors are the @descriptors people try, as 5-field specs.
var cronDescriptors = map[string]string{
	"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
	"@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}

// cronFormProblem says what is wrong with the form of a cron spec ("" when
// it is right): a time zone, a descriptor, the number of fields.
func cronFormProblem(spec string) string {
	n := len(strings.Fields(spec))
	switch {
	case strings.Contains(spec, "="):
		// The parser would take TZ=... (and panic on some forms of it).
		return "time zones (TZ=...) are not supported: the schedule is in UTC; write the 5 fields alone, " + cronFieldsHint
	case strings.HasPrefix(spec, "@every"):
		return "@every is not supported; for a period, give rotation_period instead (e.g. rotation_period=720h)"
	case strings.HasPrefix(spec, "@"):
		if five, ok := cronDescriptors[strings.ToLower(spec)]; ok {
			return fmt.Sprintf("descriptors such as %s are not supported; write the 5 fields (%s is %q)", spec, spec, five)
		}
		return "descriptors (@...) are not supported; write the 5 fields " + cronFieldsHint
	case n != len(cronFields):
		return fmt.Sprintf("%q has %d fields, but a cron spec has 5: %s", spec, n, cronFieldsHint)
	}
	return ""
}

// cronFieldProblem names the first field of a 5-field cron spec that the
// parser refuses, checked alone (the others as *); "" when none is.
func cronFieldProblem(spec string) string {
	for i, f := range strings.Fields(spec) {
		probe := []string{"*", "*", "*", "*", "*"}
		probe[i] = f
		if _, err := rotation.DefaultScheduler.Parse(strings.Join(probe, " ")); err != nil {
			return fmt.Sprintf("the %s field %q is not valid: it takes %s, *, a list (1,5), a range (1-5) or a step (*/2)",
				cronFields[i].name, shortText(f, 20), cronFields[i].values)
		}
	}
	return ""
}

// rotationSchedule is when a static role's token is rotated: every period
// after the schedule's anchor, or at each instant of a cron spec, moved into
// the daily window.
type rotationSchedule struct {
	period time.Duration      // when cron is nil
	cron   *cron.SpecSchedule // nil for a period
	window dailyWindow
}

// newRotationSchedule parses a period or a cron spec (exactly one) and a
// window, reporting every problem at once.
func newRotationSchedule(period time.Duration, spec, window string) (rotationSchedule, error) {
	var errs []error
	var s rotationSchedule
	switch {
	case period != 0 && spec != "":
		errs = append(errs, errors.New("rotation_period, rotation_schedule: exactly one of them, not both; give the other one empty to switch"))
	case period == 0 && spec == "":
		errs = append(errs, errors.New("rotation_period, rotation_schedule: one of them is required; give rotation_period (e.g. 720h) or a cron rotation_schedule (e.g. \"0 3 * * *\")"))
	case spec != "":
		c, err := parseCronSchedule(spec)
		errs = append(errs, err)
		s.cron = c
	case period < minRotationPeriod || period > maxStaticRotationPeriod:
		errs = append(errs, fmt.Errorf("rotation_period: must be between %s and %s", humanDuration(minRotationPeriod), humanDuration(maxStaticRotationPeriod)))
	default:
		s.period = period
	}
	w, err := parseWindow(window)
	s.window = w
	errs = append(errs, err)
	return s, errors.Join(errs...)
}

// after is the schedule's first instant after from, before the window.
func (s rotationSchedule) after(from time.Time) time.Time {
	if s.cron != nil {
		return s.cron.Next(from.UTC())
	}
	return from.UTC().Add(s.period)
}

// next is when the schedule rotates next: its first instant after from, no
// earlier than a backoff retry, moved into the window.
func (s rotationSchedule) next(from time.Time, retryAt *time.Time) time.Time {
	due := s.after(from)
	if retryAt != nil && retryAt.After(due) {
		due = retryAt.UTC()
	}
	return s.window.next(due)
}

// anchor is what the schedule counts from after a scheduled rotation that
// was due at due and ran at now: the due time, so that a rotation that runs
// a little late (the periodic function runs about once a minute) does not
// push every later one back; now when the schedule fell so far behind that
// its next instant from due has passed already (no burst of catch-up
// rotations).
func (s rotationSchedule) anchor(due, now time.Time) time.Time {
	if due.IsZero() || due.After(now) || !s.after(due).After(now) {
		return now.UTC()
	}
	return due.UTC()
}
