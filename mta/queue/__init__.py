"""queue: the durable spool (SQLite, group commit) and the in-memory delivery schedule.

What other packages import:
- `Spool`: put / get / get_with_body / read_body / list / hold / release / delete / purge / stats /
  iter_pending / record (spool.py)
- `Envelope`, `Recipient`: what ingress hands to `Spool.put` (envelope.py)
- `MessageInfo`, `RecipientInfo`, `PendingRecipient`, `Outcome`, `SpoolError`,
  `SpoolFullError` (records.py)
- `Scheduler`, `WorkItem`, `QueueKey`: ready queues and the retry heap (scheduler.py)
- `RetrySchedule`: next retry time and expiry from [delivery] (retry.py)
- `ScheduledQueueName`, `ReadyQueueName`: the only place queue names are built (names.py)
"""

from mta.queue.envelope import Envelope, Recipient
from mta.queue.ids import id_time, is_queue_id
from mta.queue.names import ReadyQueueName, ScheduledQueueName
from mta.queue.records import (
    MessageInfo,
    Outcome,
    PendingRecipient,
    RecipientInfo,
    SpoolError,
    SpoolFullError,
)
from mta.queue.retry import RetrySchedule
from mta.queue.scheduler import QueueKey, Scheduler, WorkItem
from mta.queue.spool import Spool

__all__ = [
    "Envelope",
    "MessageInfo",
    "Outcome",
    "PendingRecipient",
    "QueueKey",
    "ReadyQueueName",
    "Recipient",
    "RecipientInfo",
    "RetrySchedule",
    "ScheduledQueueName",
    "Scheduler",
    "Spool",
    "SpoolError",
    "SpoolFullError",
    "WorkItem",
    "id_time",
    "is_queue_id",
]
