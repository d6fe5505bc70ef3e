-- The development mailbox: what `conveyor run` accepted on its loopback SMTP listener
-- when no SMTP server is configured (`conveyor mail list|show`). Production roles never
-- write here: a worker without an SMTP server refuses to start.
CREATE TABLE dev_mailbox (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    -- The SMTP envelope: MAIL FROM and every RCPT TO.
    mail_from    text        NOT NULL,
    rcpt_to      text[]      NOT NULL,
    -- From the message's headers, for listing.
    subject      text,
    message_id   text,
    -- The whole message as received (headers and body, dot-unstuffed).
    raw          text        NOT NULL
);
