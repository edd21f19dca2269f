//! Messages: creation with gap-free sequence numbers, appended chunks, finishing.

/// Appends the messages methods of [`Store`](crate::Store) to the methods gathered so far and
/// hands them on (see `impl_store!`).
macro_rules! store_messages {
    ($store:ty; [$($done:tt)*] $next:ident $(, $rest:ident)*) => {
        $next!($store; [
            $($done)*

            async fn create_message(&self, new: NewMessage) -> Result<Message> {
                let (mut tx, _turn) = self.write_tx().await?;
                let seq: i64 = sqlx::query(sql::NEXT_MESSAGE_SEQ)
                    .bind(new.sandbox_id.as_uuid())
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| StoreError::not_found("sandbox", new.sandbox_id))?
                    .try_get("message_seq")?;
                let row = sqlx::query(sql::INSERT_MESSAGE)
                    .bind(MessageId::new().as_uuid())
                    .bind(new.sandbox_id.as_uuid())
                    .bind(seq)
                    .bind(new.role.as_str())
                    .bind(&new.content)
                    .bind(new.status.as_str())
                    .bind(now_micros())
                    .fetch_one(&mut *tx)
                    .await?;
                let message = message_from_row(&row)?;
                tx.commit().await?;
                Ok(message)
            }

            async fn append_message_content(&self, id: MessageId, delta: &str) -> Result<()> {
                let done = sqlx::query(sql::APPEND_CONTENT)
                    .bind(id.as_uuid())
                    .bind(delta.to_owned())
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err(self.message_miss(id).await);
                }
                Ok(())
            }

            async fn append_message_raw_log(&self, id: MessageId, delta: &str) -> Result<()> {
                let done = sqlx::query(sql::APPEND_RAW_LOG)
                    .bind(id.as_uuid())
                    .bind(delta.to_owned())
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err(self.message_miss(id).await);
                }
                Ok(())
            }

            async fn append_messages(&self, appends: &[MessageAppend]) -> Result<Vec<MessageId>> {
                let mut missed = Vec::new();
                let appends: Vec<&MessageAppend> = appends
                    .iter()
                    .filter(|a| !a.content.is_empty() || !a.raw_log.is_empty())
                    .collect();
                if appends.is_empty() {
                    return Ok(missed);
                }
                let (mut tx, _turn) = self.write_tx().await?;
                for append in appends {
                    let done = sqlx::query(sql::APPEND_BOTH)
                        .bind(append.id.as_uuid())
                        .bind(append.content.clone())
                        .bind(append.raw_log.clone())
                        .execute(&mut *tx)
                        .await?;
                    if done.rows_affected() == 0 {
                        missed.push(append.id);
                    }
                }
                tx.commit().await?;
                Ok(missed)
            }

            async fn finish_message(
                &self,
                id: MessageId,
                status: MessageStatus,
            ) -> Result<Message> {
                if status == MessageStatus::Streaming {
                    return Err(StoreError::invalid(
                        "message status",
                        "a message finishes as `completed` or `error`",
                    ));
                }
                let (mut tx, _turn) = self.write_tx().await?;
                let chunks = sqlx::query(sql::MESSAGE_CHUNKS)
                    .bind(id.as_uuid())
                    .fetch_all(&mut *tx)
                    .await?;
                if let Some(last) = chunks.last() {
                    let last: i64 = last.try_get("id")?;
                    let (content, raw_log) = fold_chunks(&chunks)?;
                    sqlx::query(sql::FOLD_CHUNKS)
                        .bind(id.as_uuid())
                        .bind(content)
                        .bind(raw_log)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(sql::DELETE_CHUNKS)
                        .bind(id.as_uuid())
                        .bind(last)
                        .execute(&mut *tx)
                        .await?;
                }
                let row = sqlx::query(sql::FINISH_MESSAGE)
                    .bind(id.as_uuid())
                    .bind(status.as_str())
                    .bind(now_micros())
                    .fetch_optional(&mut *tx)
                    .await?;
                match row {
                    Some(row) => {
                        let message = message_from_row(&row)?;
                        tx.commit().await?;
                        Ok(message)
                    }
                    None => {
                        // Dropping `tx` rolls the fold back: nothing of a finished or
                        // unknown message changes.
                        drop(tx);
                        Err(self.message_miss(id).await)
                    }
                }
            }

            async fn list_messages(
                &self,
                sandbox_id: SandboxId,
                after_seq: i64,
                limit: u32,
            ) -> Result<Vec<Message>> {
                let limit = sql::check_message_limit(limit)?;
                let rows = sqlx::query(sql::LIST_MESSAGES)
                    .bind(sandbox_id.as_uuid())
                    .bind(after_seq)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                let mut messages = rows
                    .iter()
                    .map(message_from_row)
                    .collect::<Result<Vec<_>>>()?;
                // A streaming message's output so far is its row plus its chunks.
                for message in &mut messages {
                    if message.status == MessageStatus::Streaming {
                        let chunks = sqlx::query(sql::MESSAGE_CHUNKS)
                            .bind(message.id.as_uuid())
                            .fetch_all(&self.pool)
                            .await?;
                        let (content, raw_log) = fold_chunks(&chunks)?;
                        message.content.push_str(&content);
                        message.raw_log.push_str(&raw_log);
                    }
                }
                Ok(messages)
            }
        ] $($rest),*);
    };
}
