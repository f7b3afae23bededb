// franz-client is the franz-go side of the Kafscale end-to-end tests.
//
//	franz-client roundtrip -brokers HOST:PORT -topic T -codec gzip -count N
//	    [-tls-ca CA.pem] [-sasl MECHANISM -user U -password P | -token JWT]
//	franz-client default -brokers HOST:PORT -topic T -count N
//	franz-client group -brokers HOST:PORT -topic T -group G
//
// default: a producer with franz-go's default options (idempotent, acks=all);
// every record must then be stored exactly once, in send order per partition.
// group: a group member that prints "REC partition offset value" per
// record, commits after every poll, and leaves once idle for 5 s.
//
// It produces N records with keys and headers (acks=all), remembers the
// partition and offset each one was acknowledged at, reads every partition back
// from the start and checks that each record is at its offset with identical
// key, value and headers, and that nothing else is there. Exit status 0 and a
// final "ok" line mean the round trip was exact.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

func record(topic, codec string, i int) *kgo.Record {
	return &kgo.Record{
		Topic: topic,
		Key:   []byte(fmt.Sprintf("key-%d", i)),
		Value: []byte(fmt.Sprintf("value-%d-%s", i, strings.Repeat("x", i%200))),
		Headers: []kgo.RecordHeader{
			{Key: "idx", Value: []byte(fmt.Sprint(i))},
			{Key: "codec", Value: []byte(codec)},
		},
	}
}

func compression(name string) kgo.CompressionCodec {
	switch name {
	case "gzip":
		return kgo.GzipCompression()
	case "snappy":
		return kgo.SnappyCompression()
	case "lz4":
		return kgo.Lz4Compression()
	case "zstd":
		return kgo.ZstdCompression()
	default:
		return kgo.NoCompression()
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "FAIL: "+format+"\n", args...)
	os.Exit(1)
}

// securityOpts turns the TLS and SASL flags into client options.
func securityOpts(caFile, mechanism, user, password, token string) []kgo.Opt {
	var opts []kgo.Opt
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			fail("reading %s: %v", caFile, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			fail("%s holds no PEM certificate", caFile)
		}
		opts = append(opts, kgo.DialTLSConfig(&tls.Config{RootCAs: pool}))
	}
	switch mechanism {
	case "":
	case "plain":
		opts = append(opts, kgo.SASL(plain.Auth{User: user, Pass: password}.AsMechanism()))
	case "scram-sha-256":
		opts = append(opts, kgo.SASL(scram.Auth{User: user, Pass: password}.AsSha256Mechanism()))
	case "scram-sha-512":
		opts = append(opts, kgo.SASL(scram.Auth{User: user, Pass: password}.AsSha512Mechanism()))
	case "oauthbearer":
		opts = append(opts, kgo.SASL(oauth.Auth{Token: token}.AsMechanism()))
	default:
		fail("unknown SASL mechanism %q", mechanism)
	}
	return opts
}

type position struct {
	partition int32
	offset    int64
}

func main() {
	if len(os.Args) < 2 || (os.Args[1] != "roundtrip" && os.Args[1] != "default" && os.Args[1] != "group") {
		fail("usage: franz-client roundtrip|default|group -brokers HOST:PORT -topic T [-codec C] [-count N] [-group G]")
	}
	fs := flag.NewFlagSet("roundtrip", flag.ExitOnError)
	brokers := fs.String("brokers", "127.0.0.1:9092", "bootstrap servers")
	topic := fs.String("topic", "", "topic (must exist)")
	codec := fs.String("codec", "none", "gzip|snappy|lz4|zstd|none")
	count := fs.Int("count", 10000, "records to produce")
	group := fs.String("group", "", "consumer group (group mode)")
	tlsCA := fs.String("tls-ca", "", "roundtrip: connect with TLS, trusting this PEM CA file")
	mechanism := fs.String("sasl", "", "roundtrip: SASL mechanism, plain|scram-sha-256|scram-sha-512|oauthbearer")
	user := fs.String("user", "", "SASL user")
	password := fs.String("password", "", "SASL password")
	token := fs.String("token", "", "OAUTHBEARER token")
	_ = fs.Parse(os.Args[2:])
	security := securityOpts(*tlsCA, *mechanism, *user, *password, *token)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if os.Args[1] == "default" {
		defaultProducer(ctx, *brokers, *topic, *count)
		return
	}
	if os.Args[1] == "group" {
		groupMember(ctx, *brokers, *topic, *group)
		return
	}

	producer, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(strings.Split(*brokers, ",")...),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.DisableIdempotentWrite(),
		kgo.ProducerBatchCompression(compression(*codec)),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
	}, security...)...)
	if err != nil {
		fail("client: %v", err)
	}
	acked := make(map[int]position, *count)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := 0; i < *count; i++ {
		wg.Add(1)
		i := i
		producer.Produce(ctx, record(*topic, *codec, i), func(r *kgo.Record, err error) {
			defer wg.Done()
			if err != nil {
				fail("produce %d: %v", i, err)
			}
			mu.Lock()
			acked[i] = position{r.Partition, r.Offset}
			mu.Unlock()
		})
	}
	wg.Wait()
	producer.Close()

	byPos := make(map[position]int, len(acked))
	for i, p := range acked {
		byPos[p] = i
	}
	consumer, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(strings.Split(*brokers, ",")...),
		kgo.ConsumeTopics(*topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	}, security...)...)
	if err != nil {
		fail("consumer: %v", err)
	}
	defer consumer.Close()
	seen := 0
	for seen < *count {
		fetches := consumer.PollFetches(ctx)
		if ctx.Err() != nil {
			fail("timed out after reading %d of %d records", seen, *count)
		}
		fetches.EachError(func(t string, p int32, err error) { fail("fetch %s[%d]: %v", t, p, err) })
		fetches.EachRecord(func(r *kgo.Record) {
			i, ok := byPos[position{r.Partition, r.Offset}]
			if !ok {
				fail("unexpected record at partition %d offset %d", r.Partition, r.Offset)
			}
			want := record(*topic, *codec, i)
			if !bytes.Equal(r.Key, want.Key) || !bytes.Equal(r.Value, want.Value) {
				fail("record %d at %d/%d: key or value differs", i, r.Partition, r.Offset)
			}
			if len(r.Headers) != len(want.Headers) {
				fail("record %d: %d headers, want %d", i, len(r.Headers), len(want.Headers))
			}
			for h := range want.Headers {
				if r.Headers[h].Key != want.Headers[h].Key || !bytes.Equal(r.Headers[h].Value, want.Headers[h].Value) {
					fail("record %d: header %d differs", i, h)
				}
			}
			delete(byPos, position{r.Partition, r.Offset})
			seen++
		})
	}
	fmt.Printf("ok franz-go codec=%s records=%d\n", *codec, seen)
}

func defaultProducer(ctx context.Context, brokers, topic string, count int) {
	producer, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...))
	if err != nil {
		fail("client: %v", err)
	}
	var wg sync.WaitGroup
	for i := 0; i < count; i++ {
		wg.Add(1)
		producer.Produce(ctx, &kgo.Record{Topic: topic, Key: []byte(fmt.Sprintf("k%d", i%1000)), Value: []byte(fmt.Sprint(i))},
			func(r *kgo.Record, err error) {
				defer wg.Done()
				if err != nil {
					fail("produce: %v", err)
				}
			})
	}
	wg.Wait()
	producer.Close()

	consumer, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		fail("consumer: %v", err)
	}
	defer consumer.Close()
	seen := make([]bool, count)
	last := map[int32]int{}
	total := 0
	for total < count {
		fetches := consumer.PollFetches(ctx)
		if ctx.Err() != nil {
			fail("timed out after %d of %d records", total, count)
		}
		fetches.EachError(func(t string, p int32, err error) { fail("fetch %s[%d]: %v", t, p, err) })
		fetches.EachRecord(func(r *kgo.Record) {
			var i int
			fmt.Sscan(string(r.Value), &i)
			if seen[i] {
				fail("record %d stored twice", i)
			}
			seen[i] = true
			if prev, ok := last[r.Partition]; ok && prev > i {
				fail("partition %d has %d before %d", r.Partition, prev, i)
			}
			last[r.Partition] = i
			total++
		})
	}
	// Nothing beyond the sent records may follow.
	short, cancelShort := context.WithTimeout(ctx, time.Second)
	defer cancelShort()
	if extra := consumer.PollFetches(short).NumRecords(); extra > 0 {
		fail("%d records more than were sent", extra)
	}
	fmt.Printf("ok franz-go default-producer records=%d\n", total)
}

func groupMember(ctx context.Context, brokers, topic, group string) {
	client, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit())
	if err != nil {
		fail("client: %v", err)
	}
	defer client.Close()
	lastRecord := time.Now()
	for time.Since(lastRecord) < 5*time.Second {
		poll, cancelPoll := context.WithTimeout(ctx, 500*time.Millisecond)
		fetches := client.PollFetches(poll)
		cancelPoll()
		if ctx.Err() != nil {
			fail("timed out")
		}
		fetches.EachRecord(func(r *kgo.Record) {
			lastRecord = time.Now()
			fmt.Printf("REC %d %d %s\n", r.Partition, r.Offset, r.Value)
		})
		if err := client.CommitUncommittedOffsets(ctx); err != nil {
			fail("commit: %v", err)
		}
	}
}
