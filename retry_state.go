package tooken

import (
	"time"
)

// maxLastErrorLen bounds the error text kept with work to retry.
const maxLastErrorLen = 300

// retryState is the backoff of work that the periodic func retries (the
// rollback of an issuance record, a queued revoke). Its fields sit inline in
// the stored JSON.
type retryState struct {
	Attempts    int       `json:"attempts,omitempty"`
	NextAttempt time.Time `json:"next_attempt,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
}

// retryPolicy is an exponential backoff from base, capped at max.
type retryPolicy struct {
	base, max time.Duration
}

// delay is the wait before attempt n+1 (n >= 1).
func (p retryPolicy) delay(attempts int) time.Duration {
	d := p.base
	for i := 1; i < attempts && d < p.max; i++ {
		d *= 2
	}
	return min(d, p.max)
}

// recordFailure counts a failed attempt of r at now, and sets when to try
// again.
func (p retryPolicy) recordFailure(r *retryState, err error, now time.Time) {
	r.Attempts++
	r.LastError = truncateErr(err)
	r.NextAttempt = now.Add(p.delay(r.Attempts))
}

func truncateErr(err error) string {
	s := err.Error()
	if len(s) > maxLastErrorLen {
		s = s[:maxLastErrorLen] + "..."
	}
	return s
}
