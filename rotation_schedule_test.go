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
		{"02:00-02:04", "at least 5m0s long"},
		{"02:00", "not a daily UTC window"},
		{"2am-3am", "not a daily UTC window"},
		{"25:00-03:00", "not a daily UTC window"},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			_, err := parseWindow(tc.in)
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
