-- The business tables of the shipped kinds: the product catalog, orders and their lines
-- (written by `order.process`), and sent emails (written by `email.send`).

CREATE TABLE products (
    sku              text PRIMARY KEY,
    name             text     NOT NULL,
    unit_price_minor bigint   NOT NULL CHECK (unit_price_minor >= 0),
    currency         char(3)  NOT NULL,
    -- The database refuses to oversell, whatever the code does.
    stock            integer  NOT NULL CHECK (stock >= 0)
);

-- One row per order id, ever: the primary key is what makes placing an order exactly once.
CREATE TABLE orders (
    order_id       text PRIMARY KEY,
    -- The order.process job that placed it (later jobs for this id return its result).
    job_id         uuid        NOT NULL,
    -- The email.send job enqueued in the same transaction.
    email_job_id   uuid,
    customer_email text        NOT NULL,
    customer_name  text        NOT NULL,
    status         text        NOT NULL CHECK (status IN ('confirmed', 'rejected')),
    -- Why a rejected order was rejected.
    reason         text,
    currency       char(3)     NOT NULL,
    -- Sum of the line totals; NULL for a rejected order.
    total_minor    bigint,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'confirmed') = (total_minor IS NOT NULL)),
    CHECK ((status = 'rejected') = (reason IS NOT NULL))
);
CREATE INDEX orders_job ON orders (job_id);

-- The lines of a confirmed order, priced when it was placed.
CREATE TABLE order_items (
    order_id         text    NOT NULL REFERENCES orders (order_id) ON DELETE CASCADE,
    line_no          integer NOT NULL CHECK (line_no >= 1),
    sku              text    NOT NULL,
    -- The product's name when the order was placed.
    name             text    NOT NULL,
    quantity         integer NOT NULL CHECK (quantity >= 1),
    unit_price_minor bigint  NOT NULL CHECK (unit_price_minor >= 0),
    line_total_minor bigint  NOT NULL,
    PRIMARY KEY (order_id, line_no)
);

-- One row per email.send job whose message the SMTP server accepted: a retry or a
-- redelivery of that job finds it and does not send again.
CREATE TABLE emails (
    job_id     uuid PRIMARY KEY,
    recipient  text        NOT NULL,
    message_id text        NOT NULL,
    subject    text        NOT NULL,
    sent_at    timestamptz NOT NULL DEFAULT now()
);
