-- One server, two databases: Prefect's and the review queue's (created on first start only).
CREATE DATABASE prefect;
CREATE DATABASE review;
