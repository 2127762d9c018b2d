package tooken

import (
	"strings"
	"testing"
	"time"
)

// The daily window: inside or not, and the first instant inside at or after
// a time.
func TestDailyWindow(t *testing.T) {
	at := func(hm string) time.Time {
		tm, _ := time.Parse("2006-01-02 15:04", "2026-11-26 "+hm)
		return tm
	}
	cases := []struct {
		window, at string
		in         bool
		next       string
	}{
		{"", "13:37", true, "2026-11-26 13:37"},
		{"02:00-03:00", "02:00", true, "2026-11-26 02:00"},
		{"02:00-03:00", "03:00", false, "2026-11-27 02:00"},
		{"02:00-03:00", "01:59", false, "2026-11-26 02:00"},
		{"22:00-02:00", "23:30", true, "2026-11-26 23:30"},
		{"22:00-02:00", "01:00", true, "2026-11-26 01:00"},
		{"22:00-02:00", "12:00", false, "2026-11-26 22:00"},
	}
	for _, tc := range cases {
		w, err := parseWindow(tc.window)
		if err != nil {
			t.Fatal(err)
		}
		if got := w.contains(at(tc.at)); got != tc.in {
			t.Errorf("%q contains %s = %v", tc.window, tc.at, got)
		}
		if got := w.next(at(tc.at)).Format("2006-01-02 15:04"); got != tc.next {
			t.Errorf("%q next(%s) = %s, want %s", tc.window, tc.at, got, tc.next)
		}
	}
}

func TestParseWindow(t *testing.T) {
	cases := []struct {
		in      string
		wantErr string // "" = valid
	}{
		{"", ""},
		{"02:00-03:00", ""},
		{" 22:00 - 02:00 ", ""},
		{"00:00-00:00", ""}, // the whole day
		{"02:00-02:04", "at least 5m long"},
		{"02:00", "not a daily UTC window"},
		{"2am-3am", "not a daily UTC window"},
		{"25:00-03:00", "not a daily UTC window"},
		// A caller's value is quoted shortened, whatever its length.
		{strings.Repeat("x", 100000), `"` + strings.Repeat("x", 40) + `..." is not a daily UTC window`},
		{"02:00-02:04" + strings.Repeat(" ", 100000), "at least 5m long"},
	}
	for _, tc := range cases {
		t.Run(tc.in[:min(len(tc.in), 20)], func(t *testing.T) {
			_, err := parseWindow(tc.in)
			if err != nil && len(err.Error()) > 200 {
				t.Fatalf("parseWindow(%q): an error of %d bytes", tc.in, len(err.Error()))
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("parseWindow(%q): %v", tc.in, err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "rotation_window: ")):
				t.Fatalf("parseWindow(%q) = %v, want an error naming rotation_window with %q", tc.in, err, tc.wantErr)
			}
		})
	}
}

// The period schedule: period after the secret was set, no earlier than a
// backoff retry, moved into the window; off at period 0.
func TestNextPeriodicRotation(t *testing.T) {
	at := func(s string) time.Time {
		tm, err := time.Parse("2006-01-02 15:04", s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	ptr := func(s string) *time.Time { tm := at(s); return &tm }
	night, _ := parseWindow("02:00-03:00")
	cases := []struct {
		name    string
		period  time.Duration
		setAt   string // "" = unknown
		retryAt *time.Time
		window  dailyWindow
		now     string
		want    string // "" = zero (off)
	}{
		{"off", 0, "2026-11-26 00:00", nil, dailyWindow{}, "2026-11-26 12:00", ""},
		{"period after set", time.Hour, "2026-11-26 00:00", nil, dailyWindow{}, "2026-11-26 00:10", "2026-11-26 01:00"},
		{"overdue stays due", time.Hour, "2026-11-26 00:00", nil, dailyWindow{}, "2026-11-26 05:00", "2026-11-26 01:00"},
		{"set unknown: now", time.Hour, "", nil, dailyWindow{}, "2026-11-26 05:00", "2026-11-26 05:00"},
		{"backoff later than due", time.Hour, "2026-11-26 00:00", ptr("2026-11-26 01:30"), dailyWindow{}, "2026-11-26 01:10", "2026-11-26 01:30"},
		{"backoff earlier than due", time.Hour, "2026-11-26 00:00", ptr("2026-11-26 00:30"), dailyWindow{}, "2026-11-26 00:10", "2026-11-26 01:00"},
		{"moved into the window", time.Hour, "2026-11-26 00:00", nil, night, "2026-11-26 00:10", "2026-11-26 02:00"},
		{"inside the window", time.Hour, "2026-11-26 01:30", nil, night, "2026-11-26 01:40", "2026-11-26 02:30"},
		{"past the window: next day", time.Hour, "2026-11-26 02:10", nil, night, "2026-11-26 02:20", "2026-11-27 02:00"},
		{"backoff into the window", time.Hour, "2026-11-26 00:00", ptr("2026-11-26 03:01"), night, "2026-11-26 02:59", "2026-11-27 02:00"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var setAt time.Time
			if tc.setAt != "" {
				setAt = at(tc.setAt)
			}
			got := nextPeriodicRotation(tc.period, setAt, tc.retryAt, tc.window, at(tc.now))
			want := time.Time{}
			if tc.want != "" {
				want = at(tc.want)
			}
			if !got.Equal(want) {
				t.Errorf("next = %v, want %v", got, want)
			}
		})
	}
}

// After n failures in a row the schedule waits 1m, 2m, 4m, ... at most 1h.
func TestRotationBackoff(t *testing.T) {
	cases := map[int]time.Duration{
		1: time.Minute, 2: 2 * time.Minute, 3: 4 * time.Minute, 6: 32 * time.Minute,
		7: time.Hour, 10: time.Hour, 11: time.Hour, 1000: time.Hour,
	}
	for n, want := range cases {
		if got := rotationBackoff(n); got != want {
			t.Errorf("rotationBackoff(%d) = %s, want %s", n, got, want)
		}
	}
}

func TestValidateRotationPeriod(t *testing.T) {
	for p, ok := range map[time.Duration]bool{0: true, time.Minute: true, 90 * 24 * time.Hour: true, 59 * time.Second: false, -time.Minute: false} {
		if err := validateRotationPeriod(p); (err == nil) != ok || (err != nil && !strings.HasPrefix(err.Error(), "rotation_period: ")) {
			t.Errorf("validateRotationPeriod(%s) = %v", p, err)
		}
	}
}

func TestParseCronSchedule(t *testing.T) {
	cases := []struct {
		spec    string
		wantErr string // "" = valid
	}{
		{"0 3 * * *", ""},
		{"*/15 * * * *", ""},
		{"30 2 * * 1-5", ""},
		{"0 0 29 2 *", ""}, // leap days: it fires, if rarely
		{"0 3 * *", `"0 3 * *" has 4 fields, but a cron spec has 5: "minute hour day-of-month month day-of-week" (UTC)`},
		{"0 0 3 * * *", "has 6 fields, but a cron spec has 5"}, // seconds are not standard
		{"61 * * * *", `the minute field "61" is not valid: it takes 0-59`},
		{"0 25 * * *", `the hour field "25" is not valid: it takes 0-23, *, a list (1,5), a range (1-5) or a step (*/2)`},
		{"0 0 0 * *", `the day-of-month field "0" is not valid: it takes 1-31`},
		{"0 3 * JANX *", `the month field "JANX" is not valid: it takes 1-12 or JAN-DEC`},
		{"0 3 * * 8", `the day-of-week field "8" is not valid: it takes 0-6 or SUN-SAT`},
		{"*/0 * * * *", `the minute field "*/0" is not valid`},
		{"@daily", `descriptors such as @daily are not supported; write the 5 fields (@daily is "0 0 * * *")`},
		{"@every 1h", "give rotation_period instead"},
		{"@sometimes", "descriptors (@...) are not supported"},
		{"TZ=Europe/Paris 0 3 * * *", "time zones (TZ=...) are not supported"},
		{"TZ=UTC", "time zones (TZ=...) are not supported"}, // the parser would panic on it
		{"CRON_TZ=UTC 0 3 * * *", "time zones (TZ=...) are not supported"},
		{"0 0 30 2 *", `"0 0 30 2 *" never fires: no month has that day-of-month`},
		{"0 3 31 2 *", "never fires"},
		{strings.Repeat("1,", 60) + "1 * * * *", "at most 100 characters"},
	}
	for _, tc := range cases {
		t.Run(tc.spec, func(t *testing.T) {
			_, err := parseCronSchedule(tc.spec)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			case err != nil && !strings.HasPrefix(err.Error(), "rotation_schedule: "):
				t.Fatalf("error %q does not name the field", err)
			}
		})
	}
}

// A static role's schedule: the next rotation after the anchor, for a period
// and for a cron spec (UTC), after a failure backoff, moved into the window.
func TestRotationSchedule_Next(t *testing.T) {
	at := func(s string) time.Time {
		tm, err := time.Parse("2006-01-02 15:04:05", s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	retry := at("2026-11-26 12:00:00")
	cases := []struct {
		name           string
		period         time.Duration
		spec, window   string
		from           string
		retryAt        *time.Time
		next           string
		wantErrContain string
	}{
		{name: "period", period: time.Hour, from: "2026-11-26 10:20:30", next: "2026-11-26 11:20:30"},
		{name: "period into the window", period: time.Hour, window: "02:00-03:00", from: "2026-11-26 10:20:30", next: "2026-11-27 02:00:00"},
		{name: "period already in the window", period: 10 * time.Minute, window: "02:00-03:00", from: "2026-11-26 02:10:00", next: "2026-11-26 02:20:00"},
		{name: "period, backoff later", period: time.Minute, from: "2026-11-26 10:00:00", retryAt: &retry, next: "2026-11-26 12:00:00"},
		{name: "cron daily", spec: "0 3 * * *", from: "2026-11-26 10:20:30", next: "2026-11-27 03:00:00"},
		{name: "cron from its own instant", spec: "0 3 * * *", from: "2026-11-27 03:00:00", next: "2026-11-28 03:00:00"},
		{name: "cron every 15 minutes", spec: "*/15 * * * *", from: "2026-11-26 10:20:30", next: "2026-11-26 10:30:00"},
		{name: "cron weekdays", spec: "30 2 * * 1-5", from: "2026-11-27 03:00:00", next: "2026-11-30 02:30:00"}, // Friday -> Monday
		{name: "cron outside the window waits for it", spec: "0 12 * * *", window: "02:00-03:00", from: "2026-11-26 10:00:00", next: "2026-11-27 02:00:00"},
		{name: "cron inside a wrapping window", spec: "0 23 * * *", window: "22:00-02:00", from: "2026-11-26 10:00:00", next: "2026-11-26 23:00:00"},
		{name: "both", period: time.Hour, spec: "0 3 * * *", wantErrContain: "exactly one of them"},
		{name: "neither", wantErrContain: "one of them is required"},
		{name: "period too short", period: 30 * time.Second, wantErrContain: "rotation_period: must be between 1m and 366d"},
		{name: "period too long", period: 367 * 24 * time.Hour, wantErrContain: "rotation_period: must be between"},
		{name: "bad window", period: time.Hour, window: "2-3", wantErrContain: "rotation_window"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := newRotationSchedule(tc.period, tc.spec, tc.window)
			if tc.wantErrContain != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErrContain) {
					t.Fatalf("error %v, want %q", err, tc.wantErrContain)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := s.next(at(tc.from), tc.retryAt).Format("2006-01-02 15:04:05"); got != tc.next {
				t.Fatalf("next = %s, want %s", got, tc.next)
			}
		})
	}
}

// After a scheduled rotation the schedule counts from the instant the
// rotation was due, so that running a little late (the periodic function
// runs about once a minute) does not push every later rotation back; when it
// fell so far behind that the next instant has passed too, from now.
func TestRotationSchedule_Anchor(t *testing.T) {
	due := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	minute, _ := newRotationSchedule(time.Minute, "", "")
	daily, _ := newRotationSchedule(0, "0 3 * * *", "")
	cases := []struct {
		name string
		s    rotationSchedule
		now  time.Time
		want time.Time
	}{
		{"late by seconds: the due time", minute, due.Add(40 * time.Second), due},
		{"late by a whole period: now", minute, due.Add(61 * time.Second), due.Add(61 * time.Second)},
		{"cron late by hours: the due time", daily, due.Add(5 * time.Hour), due},
		{"cron late by days: now", daily, due.Add(48 * time.Hour), due.Add(48 * time.Hour)},
		{"not due yet (a manual rotation): now", minute, due.Add(-time.Second), due.Add(-time.Second)},
	}
	for _, tc := range cases {
		if got := tc.s.anchor(due, tc.now); !got.Equal(tc.want) {
			t.Errorf("%s: anchor = %s, want %s", tc.name, got, tc.want)
		}
	}
	// With the due time as anchor, a 1m schedule rotated 40s late each time
	// stays on its minutes.
	from := due
	for range 5 {
		next := minute.next(from, nil)
		from = minute.anchor(next, next.Add(40*time.Second))
	}
	if want := due.Add(5 * time.Minute); !from.Equal(want) {
		t.Fatalf("after 5 late rotations the schedule counts from %s, want %s", from, want)
	}
}

// BenchmarkParseCronSchedule: the parse of a valid rotation_schedule, which
// every static-creds read of a cron role does.
//
//	go test -run '^$' -bench BenchmarkParseCronSchedule -benchmem .
func BenchmarkParseCronSchedule(b *testing.B) {
	for b.Loop() {
		if _, err := parseCronSchedule("0 3 * * 1-5"); err != nil {
			b.Fatal(err)
		}
	}
}
