"""The outbound transaction without sockets: C: lines the client writes, S: bytes the server
answers, fed through the real reply parser (byte by byte where it matters)."""

from __future__ import annotations

from mta.delivery.transaction import (
    PIPELINED_BDAT_MAX,
    Transaction,
    TransactionResult,
    retry_indexes,
)
from mta.delivery.wire import ReplyParser, bdat_command
from mta.rfc5321 import Reply

MAIL = b"MAIL FROM:<a@b.test>\r\n"
BODY = b"Subject: hi\r\n\r\nhello\r\n.\r\n"


def rcpts(*names: str) -> list[bytes]:
    return [f"RCPT TO:<{n}@x.test>\r\n".encode() for n in names]


def converse(txn: Transaction, *answers: bytes, byte_by_byte: bool = False) -> list[bytes]:
    """Play the server: each answer is what it sends to one step. Returns what the client
    wrote, step by step; the transaction must then be over."""
    parser = ReplyParser()
    written = []
    step = txn.start()
    for answer in answers:
        assert step is not None, f"the transaction ended before {answer!r}"
        written.append(step.data)
        chunks = [answer[i:i + 1] for i in range(len(answer))] if byte_by_byte else [answer]
        replies: list[Reply] = []
        for chunk in chunks:
            replies.extend(parser.feed(chunk))
        assert len(replies) == step.replies, (step, replies)
        step = txn.receive(replies)
    assert step is None, f"the transaction wants more: {step}"
    return written


def codes(tr: TransactionResult | None) -> list[int]:
    assert tr is not None
    return [r.code for r in tr.per_recipient]


def test_rfc2920_pipelined_two_round_trips_split_across_reads():
    txn = Transaction(MAIL, [0, 1], rcpts("u", "v"), BODY, pipelined=True)
    written = converse(txn, b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.1.5 ok\r\n354 go\r\n",
                       b"250 2.0.0 queued as X\r\n", byte_by_byte=True)
    assert written == [MAIL + b"RCPT TO:<u@x.test>\r\nRCPT TO:<v@x.test>\r\nDATA\r\n", BODY]
    assert codes(txn.result) == [250, 250]
    assert txn.result.final == Reply(250, "2.0.0", "queued as X")
    assert not txn.needs_rset and not txn.closing


def test_rfc5321_4_1_1_5_a_connection_reused_after_a_failed_transaction_starts_with_rset():
    txn = Transaction(MAIL, [0], rcpts("u"), BODY, pipelined=True, rset=True)
    written = converse(txn, b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n", b"250 ok\r\n")
    assert written[0] == b"RSET\r\n" + MAIL + b"RCPT TO:<u@x.test>\r\nDATA\r\n"
    assert txn.result.mail == Reply(250, None, "ok")  # the RSET reply is not MAIL's
    assert codes(txn.result) == [250]


def test_rfc2920_3_1_data_accepted_when_every_rcpt_was_refused_is_ended_empty():
    txn = Transaction(MAIL, [0, 1], rcpts("u", "v"), BODY, pipelined=True)
    written = converse(txn, b"250 ok\r\n550 5.1.1 no such user\r\n550 5.1.1 no\r\n354 go\r\n",
                       b"554 5.5.1 no valid recipients\r\n")
    assert written[1] == b".\r\n"  # never the body
    assert codes(txn.result) == [550, 550]
    assert txn.result.per_recipient[0].text == "no such user"


def test_an_empty_data_lost_on_the_way_keeps_the_refusals():
    txn = Transaction(MAIL, [0], rcpts("u"), BODY, pipelined=True)
    step = txn.start()
    step = txn.receive([Reply(250), Reply(550, "5.1.1", "no"), Reply(354)])
    assert step is not None and step.data == b".\r\n"
    tr = txn.lost(Reply(421, "4.4.2", "connection lost"))
    assert codes(tr) == [550]


def test_data_refused_after_mail_was_accepted_needs_rset_next_time():
    txn = Transaction(MAIL, [0], rcpts("u"), BODY, pipelined=True)
    converse(txn, b"250 ok\r\n250 ok\r\n451 4.3.0 try later\r\n")
    assert codes(txn.result) == [451] and txn.needs_rset
    refused = Transaction(MAIL, [0], rcpts("u"), BODY, pipelined=True)
    converse(refused, b"550 5.7.1 no\r\n503 5.5.1 no mail\r\n503 5.5.1 no mail\r\n")
    assert codes(refused.result) == [550] and not refused.needs_rset


def test_a_connection_lost_mid_batch_keeps_the_refusals_that_arrived():
    txn = Transaction(MAIL, [3, 4, 5], rcpts("u", "v", "w"), BODY, pipelined=True)
    txn.start()
    why = Reply(421, "4.4.2", "timeout after 300s waiting for reply to MAIL/RCPT/DATA")
    tr = txn.lost(why, [Reply(250), Reply(550, "5.1.1", "no"), Reply(250)])
    assert tr.indexes == (3, 4, 5)
    # u was refused before the loss; v was accepted but nothing was delivered; w never heard.
    assert [r.code for r in tr.per_recipient] == [550, 421, 421]
    assert tr.rcpt == (Reply(550, "5.1.1", "no"), Reply(250), None)


def test_lockstep_one_command_one_reply():
    txn = Transaction(MAIL, [0, 1], rcpts("u", "v"), BODY, pipelined=False)
    written = converse(txn, b"250 ok\r\n", b"250 ok\r\n", b"550 5.1.1 no\r\n", b"354 go\r\n",
                       b"250 queued\r\n")
    assert written == [MAIL, *rcpts("u", "v"), b"DATA\r\n", BODY]
    assert codes(txn.result) == [250, 550]


def test_rfc5321_4_5_3_1_10_too_many_recipients_go_again_once_the_first_part_delivered():
    txn = Transaction(MAIL, [0, 1, 2], rcpts("u", "v", "w"), BODY, pipelined=False)
    written = converse(txn, b"250 ok\r\n", b"250 ok\r\n", b"452 4.5.3 too many\r\n",
                       b"354 go\r\n", b"250 queued\r\n")
    assert written[-2:] == [b"DATA\r\n", BODY]  # w is never sent in this transaction
    assert codes(txn.result) == [250, 452, 452]
    assert retry_indexes(txn.result) == [1, 2]


def test_rfc5321_3_8_a_421_at_rcpt_closes_the_transaction_and_the_connection():
    txn = Transaction(MAIL, [0, 1, 2], rcpts("u", "v", "w"), BODY, pipelined=False)
    converse(txn, b"250 ok\r\n", b"250 ok\r\n", b"421 4.3.2 shutting down\r\n",
             b"354 go\r\n", b"250 queued\r\n")
    assert codes(txn.result) == [250, 421, 421] and txn.closing
    assert retry_indexes(txn.result) == []


def test_lockstep_mail_refused_ends_at_once_for_every_recipient():
    txn = Transaction(MAIL, [0, 1], rcpts("u", "v"), BODY, pipelined=False, rset=True)
    written = converse(txn, b"250 reset\r\n", b"553 5.1.8 bad sender\r\n")
    assert written == [b"RSET\r\n", MAIL]
    assert codes(txn.result) == [553, 553] and not txn.needs_rset


def test_lockstep_every_rcpt_refused_sends_no_data_and_needs_rset():
    txn = Transaction(MAIL, [0], rcpts("u"), BODY, pipelined=False)
    written = converse(txn, b"250 ok\r\n", b"550 5.1.1 no\r\n")
    assert written == [MAIL, *rcpts("u")]
    assert codes(txn.result) == [550] and txn.needs_rset


def test_steps_name_their_timeout_rfc5321_4_5_3_2():
    txn = Transaction(MAIL, [0], rcpts("u"), BODY, pipelined=True)
    first = txn.start()
    assert (first.replies, first.what, first.data_timeout) == (3, "MAIL/RCPT/DATA", False)
    body = txn.receive([Reply(250), Reply(250), Reply(354)])
    assert body is not None and (body.what, body.data_timeout) == ("end of data", True)


CHUNK = bdat_command(b"Subject: hi\r\n\r\n.leading dot\r\nhello")


def test_bdat_framing_rfc3030_is_the_octets_as_they_are_with_a_final_crlf():
    assert CHUNK == (b"BDAT 36 LAST\r\nSubject: hi\r\n\r\n.leading dot\r\nhello\r\n")
    assert bdat_command(b"x\r\n") == b"BDAT 3 LAST\r\nx\r\n"


def test_rfc3030_pipelined_bdat_goes_with_the_envelope_and_its_reply_is_final():
    # One write, one round trip: a BDAT needs no go-ahead.
    txn = Transaction(MAIL, [0, 1], rcpts("a", "b"), CHUNK, pipelined=True, chunking=True)
    written = converse(txn, b"250 ok\r\n250 ok\r\n550 5.1.1 no\r\n250 2.0.0 queued\r\n")
    assert written == [MAIL + b"".join(rcpts("a", "b")) + CHUNK]
    assert [str(r) for r in txn.result.per_recipient] == ["250 2.0.0 queued", "550 5.1.1 no"]
    assert txn.result.data is None and not txn.needs_rset


def test_rfc3030_pipelined_bdat_after_every_rcpt_refused_leaves_the_refusals_and_rsets():
    # The server reads the chunk and refuses it (RFC 3030 2): the RCPT refusals stand.
    txn = Transaction(MAIL, [0], rcpts("a"), CHUNK, pipelined=True, chunking=True,
                      rset=True)
    written = converse(txn, b"250 ok\r\n250 ok\r\n550 5.1.1 no\r\n"
                            b"554 5.5.1 No valid recipients\r\n")
    assert written == [b"RSET\r\n" + MAIL + rcpts("a")[0] + CHUNK]
    assert codes(txn.result) == [550] and txn.result.final is None and txn.needs_rset
    txn = Transaction(MAIL, [0, 1], rcpts("a", "b"), CHUNK, pipelined=True, chunking=True)
    converse(txn, b"550 5.7.1 sender refused\r\n503 5.5.1 no\r\n503 5.5.1 no\r\n"
                  b"503 5.5.1 no\r\n")
    assert codes(txn.result) == [550, 550] and txn.needs_rset


def test_rfc3030_pipelined_bdat_is_refused_for_everyone_accepted_and_rsets():
    txn = Transaction(MAIL, [0], rcpts("a"), CHUNK, pipelined=True, chunking=True)
    converse(txn, b"250 ok\r\n250 ok\r\n452 4.3.1 full\r\n")
    assert codes(txn.result) == [452] and txn.needs_rset


BIG = bdat_command(b"Subject: big\r\n\r\n" + b"x" * PIPELINED_BDAT_MAX)


def test_rfc3030_a_large_chunk_waits_for_the_rcpt_replies():
    txn = Transaction(MAIL, [0, 1], rcpts("a", "b"), BIG, pipelined=True, chunking=True)
    written = converse(txn, b"250 ok\r\n250 ok\r\n550 5.1.1 no\r\n", b"250 2.0.0 queued\r\n")
    assert written == [MAIL + b"".join(rcpts("a", "b")), BIG]
    assert [str(r) for r in txn.result.per_recipient] == ["250 2.0.0 queued", "550 5.1.1 no"]


def test_rfc3030_no_large_bdat_when_every_rcpt_was_refused_and_rset_next():
    txn = Transaction(MAIL, [0], rcpts("a"), BIG, pipelined=True, chunking=True)
    assert converse(txn, b"250 ok\r\n550 5.1.1 no\r\n") == [MAIL + rcpts("a")[0]]
    assert codes(txn.result) == [550] and txn.needs_rset


def test_rfc3030_2_a_refused_bdat_is_everyones_outcome_and_needs_rset():
    txn = Transaction(MAIL, [0], rcpts("a"), CHUNK, pipelined=False, chunking=True)
    written = converse(txn, b"250 ok\r\n", b"250 ok\r\n", b"452 4.3.1 full\r\n")
    assert written == [MAIL, rcpts("a")[0], CHUNK]
    assert codes(txn.result) == [452] and txn.needs_rset
