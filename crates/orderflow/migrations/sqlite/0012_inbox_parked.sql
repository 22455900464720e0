-- A batch that changes orders wakes their parked updates (`Tx::wake_parked_many`). Parked
-- updates are few: this index finds an order's at once, where the pending index holds every
-- waiting update of the order. It gets no entry for any other update.
CREATE INDEX inbox_parked ON inbox (order_reference) WHERE status = 'parked';
