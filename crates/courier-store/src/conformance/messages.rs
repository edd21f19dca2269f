//! Messages, their sequence numbers, and atomic failure.

use futures::future::join_all;

use super::seed::*;
use crate::*;

/// Appends accumulate on a streaming message; finished messages refuse changes; replay
/// after a sequence number returns the rest in order.
pub async fn messages_append_and_replay_in_sequence_order(store: &dyn Store) {
    let p = project(store).await;
    let s = sandbox(store, &p).await;
    let prompt = store
        .create_message(NewMessage {
            sandbox_id: s.id,
            role: MessageRole::User,
            content: "do it".into(),
            status: MessageStatus::Completed,
        })
        .await
        .unwrap();
    assert_eq!(prompt.seq, 1);
    let reply = store
        .create_message(NewMessage {
            sandbox_id: s.id,
            role: MessageRole::Assistant,
            content: String::new(),
            status: MessageStatus::Streaming,
        })
        .await
        .unwrap();
    assert_eq!(reply.seq, 2);
    let mut expected = String::new();
    for i in 0..50 {
        let chunk = format!("chunk {i} ✓\n");
        store
            .append_message_content(reply.id, &chunk)
            .await
            .unwrap();
        expected.push_str(&chunk);
    }
    store
        .append_message_raw_log(reply.id, "{\"type\":\"text\"}\n")
        .await
        .unwrap();
    let done = store
        .finish_message(reply.id, MessageStatus::Completed)
        .await
        .unwrap();
    assert_eq!(done.content, expected);
    assert_eq!(done.raw_log, "{\"type\":\"text\"}\n");
    assert_eq!(done.status, MessageStatus::Completed);

    expect_conflict(store.append_message_content(reply.id, "late").await);
    expect_conflict(store.finish_message(reply.id, MessageStatus::Error).await);
    expect_invalid(
        store
            .finish_message(reply.id, MessageStatus::Streaming)
            .await,
        "message status",
    );
    expect_not_found(
        store.append_message_content(MessageId::new(), "x").await,
        "message",
    );
    expect_not_found(
        store
            .create_message(NewMessage {
                sandbox_id: SandboxId::new(),
                role: MessageRole::User,
                content: String::new(),
                status: MessageStatus::Completed,
            })
            .await,
        "sandbox",
    );

    for i in 3..=10 {
        let m = store
            .create_message(NewMessage {
                sandbox_id: s.id,
                role: MessageRole::Assistant,
                content: format!("m{i}"),
                status: MessageStatus::Completed,
            })
            .await
            .unwrap();
        assert_eq!(m.seq, i);
    }
    let all = store.list_messages(s.id, 0, 100).await.unwrap();
    assert_eq!(
        all.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(all[1], done);
    let rest = store.list_messages(s.id, 5, 3).await.unwrap();
    assert_eq!(
        rest.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![6, 7, 8]
    );
    assert!(store.list_messages(s.id, 10, 3).await.unwrap().is_empty());
    expect_invalid(store.list_messages(s.id, 0, 0).await, "limit");
}

/// Concurrent writers to one sandbox get 1..=n; another sandbox counts on its own.
pub async fn concurrent_messages_get_sequence_numbers_without_gaps(store: &dyn Store) {
    let p = project(store).await;
    let a = sandbox(store, &p).await;
    let b = sandbox(store, &p).await;
    let results = join_all((0..40).map(|i| {
        store.create_message(NewMessage {
            sandbox_id: if i % 4 == 0 { b.id } else { a.id },
            role: MessageRole::Assistant,
            content: format!("{i}"),
            status: MessageStatus::Streaming,
        })
    }))
    .await;
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    let seqs = |v: Vec<Message>| v.into_iter().map(|m| m.seq).collect::<Vec<_>>();
    assert_eq!(
        seqs(store.list_messages(a.id, 0, 100).await.unwrap()),
        (1..=30).collect::<Vec<_>>()
    );
    assert_eq!(
        seqs(store.list_messages(b.id, 0, 100).await.unwrap()),
        (1..=10).collect::<Vec<_>>()
    );
}

/// An error part-way through a multi-row write rolls everything back.
pub async fn failed_transaction_leaves_nothing_behind(store: &dyn Store) {
    let p = project(store).await;
    let s = sandbox(store, &p).await;
    let good = NewUsage {
        sandbox_id: s.id,
        service: Service::Anthropic,
        metric: UsageMetric::InputTokens,
        quantity: 1000.0,
        cost: Money::from_micros(3000),
        recorded_at: at(2, 0),
    };
    let bad = NewUsage {
        sandbox_id: SandboxId::new(),
        ..good.clone()
    };
    expect_not_found(
        store.record_usage(&[good.clone(), good.clone(), bad]).await,
        "sandbox",
    );
    assert!(store.usage_for_sandbox(s.id).await.unwrap().is_empty());
    assert!(store.usage_for_project(p.id).await.unwrap().is_empty());
    let negative = NewUsage {
        quantity: -1.0,
        ..good.clone()
    };
    expect_invalid(store.record_usage(&[good, negative]).await, "quantity");
    assert!(store.usage_for_project(p.id).await.unwrap().is_empty());

    // Activating a missing version must not leave the project with none active.
    store
        .create_learning_version(p.id, "v1".into(), true)
        .await
        .unwrap();
    expect_not_found(
        store.activate_learning_version(p.id, 99).await,
        "learning version",
    );
    assert_eq!(
        store
            .active_learning_version(p.id)
            .await
            .unwrap()
            .map(|v| v.version),
        Some(1)
    );
}

/// A batch's text and raw lines are appended together (both or neither), in order with
/// the single appends; a finished message takes neither.
pub async fn messages_append_text_and_raw_lines_together(store: &dyn Store) {
    let p = project(store).await;
    let s = sandbox(store, &p).await;
    let reply = store
        .create_message(NewMessage {
            sandbox_id: s.id,
            role: MessageRole::Assistant,
            content: String::new(),
            status: MessageStatus::Streaming,
        })
        .await
        .unwrap();
    let append = |content: &str, raw_log: &str| MessageAppend {
        id: reply.id,
        content: content.into(),
        raw_log: raw_log.into(),
    };
    let none: Vec<MessageId> = Vec::new();
    assert_eq!(
        store
            .append_messages(&[append("one ", "{\"n\":1}\n")])
            .await
            .unwrap(),
        none
    );
    store
        .append_message_content(reply.id, "two ")
        .await
        .unwrap();
    store
        .append_messages(&[append("", "{\"n\":2}\n")])
        .await
        .unwrap();
    store
        .append_messages(&[append("three", ""), append("", "")])
        .await
        .unwrap();
    let done = store
        .finish_message(reply.id, MessageStatus::Completed)
        .await
        .unwrap();
    assert_eq!(done.content, "one two three");
    assert_eq!(done.raw_log, "{\"n\":1}\n{\"n\":2}\n");
    assert_eq!(
        store
            .append_messages(&[append("late", "{}\n")])
            .await
            .unwrap(),
        [reply.id],
        "a finished message takes neither part"
    );
    let again = store.list_messages(s.id, 0, 10).await.unwrap();
    assert_eq!(again[0].content, "one two three");
    assert_eq!(again[0].raw_log, "{\"n\":1}\n{\"n\":2}\n");
}

/// A group commit of several messages' appends: each message gets its own text and raw
/// lines in order, and an append to a finished message is skipped (and named) without
/// losing the others.
pub async fn group_appends_store_each_message_and_skip_finished_ones(store: &dyn Store) {
    let p = project(store).await;
    let s = sandbox(store, &p).await;
    let mut replies = Vec::new();
    for _ in 0..3 {
        replies.push(
            store
                .create_message(NewMessage {
                    sandbox_id: s.id,
                    role: MessageRole::Assistant,
                    content: String::new(),
                    status: MessageStatus::Streaming,
                })
                .await
                .unwrap(),
        );
    }
    store
        .finish_message(replies[2].id, MessageStatus::Completed)
        .await
        .unwrap();
    let append = |i: usize, content: &str, raw: &str| MessageAppend {
        id: replies[i].id,
        content: content.to_owned(),
        raw_log: raw.to_owned(),
    };
    let missed = store
        .append_messages(&[
            append(0, "a1 ", "{\"a\":1}\n"),
            append(1, "b1", "{\"b\":1}\n"),
            append(2, "late", "{}\n"),
            append(0, "", ""),
            append(0, "a2", "{\"a\":2}\n"),
        ])
        .await
        .unwrap();
    assert_eq!(missed, [replies[2].id]);
    assert!(store.append_messages(&[]).await.unwrap().is_empty());
    let stored = store.list_messages(s.id, 0, 10).await.unwrap();
    assert_eq!(stored[0].content, "a1 a2");
    assert_eq!(stored[0].raw_log, "{\"a\":1}\n{\"a\":2}\n");
    assert_eq!(stored[1].content, "b1");
    assert_eq!(stored[1].raw_log, "{\"b\":1}\n");
    assert_eq!(stored[2].content, "");
    assert_eq!(stored[2].raw_log, "");
}
