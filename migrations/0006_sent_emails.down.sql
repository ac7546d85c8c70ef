drop table if exists sent_emails;
