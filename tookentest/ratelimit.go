package tookentest

import (
	"math"

	"golang.org/x/time/rate"
)

// limitsFor applies the defaults: rps 0 means DefaultRateLimit, rps < 0 means
// unlimited, burst <= 0 means DefaultBurst.
func limitsFor(rps float64, burst int) (rate.Limit, int) {
	if burst <= 0 {
		burst = DefaultBurst
	}
	switch {
	case rps == 0:
		return DefaultRateLimit, burst
	case rps < 0:
		return rate.Inf, burst
	}
	return rate.Limit(rps), burst
}

func isInf(l rate.Limit) bool { return l == rate.Inf || math.IsInf(float64(l), 1) }

// limiterLocked returns the token bucket of a caller token id.
func (s *Server) limiterLocked(id string) *rate.Limiter {
	l := s.limiters[id]
	if l == nil {
		l = rate.NewLimiter(s.rps, s.burst)
		s.limiters[id] = l
	}
	return l
}

// SetRateLimit changes the per-caller limit (same defaults as Options) and
// refills every caller's bucket.
func (s *Server) SetRateLimit(rps float64, burst int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rps, s.burst = limitsFor(rps, burst)
	s.limiters = map[string]*rate.Limiter{}
}
