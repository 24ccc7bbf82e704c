package redisbroker

import (
	"net/url"
	"testing"
	"time"
)

func TestParseURL(t *testing.T) {
	u, _ := url.Parse("redis://u:p@h:6380/2?maxlen=1000&claim_idle=5s&pool_size=3")
	c, err := parseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	if c.maxlen != 1000 || c.claimIdle != 5*time.Second || c.opts.Addr != "h:6380" || c.opts.DB != 2 || c.opts.PoolSize != 3 || c.opts.Password != "p" {
		t.Errorf("parsed %+v / %+v", c, c.opts)
	}
}

func TestUnmarshalTolerant(t *testing.T) {
	msg, err := marshaller{}.Unmarshal(map[string]any{"payload": "{}", "metadata": "\xc1garbage"})
	if err != nil {
		t.Fatal(err)
	}
	if msg.UUID == "" || string(msg.Payload) != "{}" || msg.Metadata.Get(metadataUndecodable) == "" {
		t.Errorf("got uuid %q payload %q metadata %v", msg.UUID, msg.Payload, msg.Metadata)
	}
}

func TestBoundRetries(t *testing.T) {
	for _, tc := range []struct {
		url  string
		max  time.Duration
		want time.Duration
	}{
		{"redis://h:6379/0", 2 * time.Second, 0}, // go-redis's 512 ms stays
		{"redis://h:6379/0", 100 * time.Millisecond, 100 * time.Millisecond},
		{"redis://h:6379/0?max_retry_backoff=5s", 2 * time.Second, 2 * time.Second},
		{"redis://h:6379/0?max_retry_backoff=100ms", 2 * time.Second, 100 * time.Millisecond},
	} {
		u, _ := url.Parse(tc.url)
		c, err := parseURL(u)
		if err != nil {
			t.Fatal(err)
		}
		c.boundRetries(tc.max)
		if c.opts.MaxRetryBackoff != tc.want {
			t.Errorf("%s with ReconnectMax %v: MaxRetryBackoff %v, want %v", tc.url, tc.max, c.opts.MaxRetryBackoff, tc.want)
		}
	}
}
