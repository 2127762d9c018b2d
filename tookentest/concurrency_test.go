package tookentest

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
)

// Many callers at once: every create is answered once, every revoke lands,
// and the books balance (run with -race).
func TestConcurrentCallers(t *testing.T) {
	s := newTestServer(t, Options{RateLimit: -1})
	root := s.RootSecret()
	const workers, each = 8, 15
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				key := fmt.Sprintf("w%d-%d", w, i)
				r, err := tryCall(s, "POST", "/v1/tokens", root, tok(key, "billing:read"), "Idempotency-Key", key)
				if err != nil || r.status != http.StatusCreated {
					errs <- fmt.Errorf("create %s: %v %d", key, err, r.status)
					continue
				}
				id, secret := r.str("id"), r.str("secret")
				if r, err := tryCall(s, "POST", "/v1/tokens/self/rotate", secret, `{"previous_secret_ttl":5}`); err != nil || r.status != 200 {
					errs <- fmt.Errorf("rotate %s: %v %d", key, err, r.status)
				}
				if _, err := tryCall(s, "GET", "/v1/tokens?limit=5", root, nil); err != nil {
					errs <- err
				}
				if i%2 == 0 {
					if r, err := tryCall(s, "DELETE", "/v1/tokens/"+id, root, nil); err != nil || r.status != 204 {
						errs <- fmt.Errorf("revoke %s: %v %d", key, err, r.status)
					}
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	c := s.Counters()
	if c["created"] != workers*each || c["rotated"] != workers*each || c["revoked"] != workers*((each+1)/2) {
		t.Fatalf("counters %v", c)
	}
	if got := len(s.LiveTokens()); got != 1+workers*(each/2) {
		t.Fatalf("live %d", got)
	}
}
