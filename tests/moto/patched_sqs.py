"""moto_server with two SQS hot spots patched, for the burst benchmark only.

moto 5.2.5 answers every SendMessage and every message it hands out by recomputing all of the
queue's attributes, each a pass over every message that reads the clock through datetime
arithmetic: a queue of N messages costs O(N) expensive steps per message, so a 5,000-message
backlog takes minutes to fill and tens of minutes to drain (measured: 2,000 messages, 108 s to
send and 318 s to drain; with this file, 3.7 s and 4.4 s). The benchmark measures the workers,
not that. It is still O(N) per message (sends still compute every attribute, receives still
scan the queue), with a much smaller constant.

What changes:
  * SQS's clock reads (`unix_time`, `unix_time_millis` with no argument) use `time.time()`,
    the same instant without the datetime round trip;
  * the retention check on a received message reads the queue's retention period directly,
    instead of through `get_queue_attributes`, which computed every attribute to return one.
Message timestamps, visibility, delays, retention and deduplication answer as before. One
visible difference: a queue's CreatedTimestamp and LastModifiedTimestamp carry more decimal
digits (nothing in this project reads them).

Usage: python patched_sqs.py <moto_server arguments>
"""

import sys
import time

import moto.sqs.models as sqs

_unix_time, _unix_time_millis = sqs.unix_time, sqs.unix_time_millis


def unix_time(dt=None):
    return time.time() if dt is None else _unix_time(dt)


def unix_time_millis(dt=None):
    return time.time() * 1000.0 if dt is None else _unix_time_millis(dt)


def is_message_valid_based_on_retention_period(self, queue_name, message):
    queue = self.get_queue(queue_name)
    return queue.message_retention_period + message.sent_timestamp / 1000 > time.time()


sqs.unix_time, sqs.unix_time_millis = unix_time, unix_time_millis
sqs.SQSBackend.is_message_valid_based_on_retention_period = (
    is_message_valid_based_on_retention_period
)

from moto.server import main  # noqa: E402  (after the patches, as moto_server would start)

sys.exit(main())
