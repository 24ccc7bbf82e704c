package bus

import (
	"testing"
	"time"
)

// TestDoubledNeverOverflows: the relay's publish backoff and a lane's
// outage pause share doubled, which doubles a pause per failure up to a
// ceiling, for any failure count and initial pause.
func TestDoubledNeverOverflows(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		initial time.Duration
		n       int
		ceiling time.Duration
		want    time.Duration
	}{
		{time.Millisecond, -1, time.Second, time.Millisecond},
		{time.Millisecond, 0, time.Second, time.Millisecond},
		{time.Millisecond, 3, time.Second, 8 * time.Millisecond},
		{time.Millisecond, 100, time.Second, time.Second},
		{2 * time.Hour, 30, 3 * time.Hour, 3 * time.Hour},
		{time.Minute, 1 << 30, 10 * time.Minute, 10 * time.Minute},
	} {
		if got := doubled(tc.initial, tc.n, tc.ceiling); got != tc.want {
			t.Errorf("doubled(%v, %d, %v) = %v, want %v", tc.initial, tc.n, tc.ceiling, got, tc.want)
		}
	}
	for n := 2; n <= 40; n++ { // 2h doubled once is past the ceiling
		if d := backoffDelay(n, 2*time.Hour, 3*time.Hour); d < 90*time.Minute || d > 270*time.Minute {
			t.Fatalf("backoffDelay(%d, 2h, 3h) = %v, want 3h ± 50%%", n, d)
		}
	}
}
