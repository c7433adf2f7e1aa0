-- The deal's creation time as the parked event tells it (NULL when it names none): a payment
-- waiting for it is ready once any parked event of its deal knows it (issue 16, item 13),
-- instead of letting that event leave the park first.
ALTER TABLE parked ADD COLUMN deal_created_at timestamptz;
