-- An order's changes in version order: what a GraphQL `orderChanged` subscription reads.
CREATE INDEX change_feed_order ON change_feed (order_id, version);
