-- What in the source sandbox's transcript shows a learning (a short quote or a pointer),
-- kept next to the claim instead of inside it. NULL: recorded without evidence.
ALTER TABLE learnings ADD COLUMN evidence TEXT;
-- Learnings extracted before this column existed carry their evidence in the content,
-- after a "\nEvidence: " line (11 characters); move it out so `content` is the claim alone.
UPDATE learnings
SET evidence = substr(content, strpos(content, chr(10) || 'Evidence: ') + 11),
    content = substr(content, 1, strpos(content, chr(10) || 'Evidence: ') - 1)
WHERE strpos(content, chr(10) || 'Evidence: ') > 0;
