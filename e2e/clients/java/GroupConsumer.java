// A consumer-group member for the end-to-end tests:
//
//   java -cp 'jars/*' GroupConsumer.java BOOTSTRAP TOPIC GROUP ASSIGNOR
//
// ASSIGNOR is range, roundrobin, sticky or cooperative-sticky. It consumes
// until it reads "stop" (or EOF) on stdin, committing synchronously after every
// poll and before giving partitions up, then closes (leaving the group). It
// prints one line per event, in order:
//   REC partition offset value | ASSIGN t p,p | REVOKE t p,p | LOST t p,p
//   COMMIT partition:offset,... | CLOSED

import java.time.Duration;
import java.util.*;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.stream.Collectors;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.RebalanceInProgressException;
import org.apache.kafka.common.serialization.StringDeserializer;

public class GroupConsumer {
    static synchronized void emit(String line) {
        System.out.println(line);
        System.out.flush();
    }

    static String parts(Collection<TopicPartition> ps) {
        return ps.stream().map(tp -> Integer.toString(tp.partition())).sorted().collect(Collectors.joining(","));
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], topic = args[1], group = args[2], assignor = args[3];
        Map<String, String> assignors = Map.of(
            "range", RangeAssignor.class.getName(),
            "roundrobin", RoundRobinAssignor.class.getName(),
            "sticky", StickyAssignor.class.getName(),
            "cooperative-sticky", CooperativeStickyAssignor.class.getName());
        Properties c = new Properties();
        c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        c.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        c.put(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, assignors.get(assignor));
        c.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        c.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        c.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "10000");
        c.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "500");
        c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());

        AtomicBoolean stop = new AtomicBoolean(false);
        Thread stdin = new Thread(() -> {
            Scanner in = new Scanner(System.in);
            while (in.hasNextLine()) if (in.nextLine().trim().equals("stop")) break;
            stop.set(true);
        });
        stdin.setDaemon(true);
        stdin.start();

        Map<TopicPartition, OffsetAndMetadata> pending = new HashMap<>();
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c)) {
            Runnable commit = () -> {
                if (pending.isEmpty()) return;
                try {
                    consumer.commitSync(pending);
                    emit("COMMIT " + pending.entrySet().stream()
                        .map(e -> e.getKey().partition() + ":" + e.getValue().offset()).sorted().collect(Collectors.joining(",")));
                    pending.clear();
                } catch (RebalanceInProgressException e) {
                    // A cooperative rebalance is completing: commit again after the next poll.
                    emit("COMMIT-RETRY");
                } catch (CommitFailedException e) {
                    // The partitions moved on; their new owner re-reads from the last commit.
                    emit("COMMIT-FAILED");
                    pending.clear();
                }
            };
            consumer.subscribe(List.of(topic), new ConsumerRebalanceListener() {
                public void onPartitionsRevoked(Collection<TopicPartition> ps) {
                    commit.run();
                    emit("REVOKE " + System.currentTimeMillis() + " " + parts(ps));
                }
                public void onPartitionsAssigned(Collection<TopicPartition> ps) {
                    emit("ASSIGN " + System.currentTimeMillis() + " " + parts(ps));
                }
                public void onPartitionsLost(Collection<TopicPartition> ps) {
                    pending.keySet().removeAll(ps);
                    emit("LOST " + System.currentTimeMillis() + " " + parts(ps));
                }
            });
            while (!stop.get()) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
                    emit("REC " + r.partition() + " " + r.offset() + " " + r.value());
                    pending.put(new TopicPartition(r.topic(), r.partition()), new OffsetAndMetadata(r.offset() + 1));
                }
                commit.run();
            }
            commit.run();
        }
        emit("CLOSED");
    }
}
