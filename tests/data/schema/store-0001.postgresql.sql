--
-- PostgreSQL database dump
--


-- Dumped from database version 15.18 (Debian 15.18-0+deb12u1)
-- Dumped by pg_dump version 15.18 (Debian 15.18-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: batch_items; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.batch_items (
    job_id character varying(64) NOT NULL,
    "position" integer NOT NULL,
    client_id character varying(256),
    input json,
    outcome json
);


--
-- Name: batches; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.batches (
    job_id character varying(64) NOT NULL,
    task_id integer NOT NULL,
    options json NOT NULL,
    total integer NOT NULL,
    done integer NOT NULL,
    errors integer NOT NULL,
    runs json NOT NULL,
    owner character varying(64)
);


--
-- Name: controllers; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.controllers (
    task_id integer NOT NULL,
    blob bytea NOT NULL,
    summary json NOT NULL,
    created_at timestamp with time zone NOT NULL
);


--
-- Name: examples; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.examples (
    row_id integer NOT NULL,
    task_id integer NOT NULL,
    example_id character varying(128) NOT NULL,
    input json NOT NULL,
    label character varying(256),
    embedding bytea NOT NULL,
    created_at timestamp with time zone NOT NULL,
    changed_version integer DEFAULT 0 NOT NULL
);


--
-- Name: examples_row_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.examples_row_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: examples_row_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.examples_row_id_seq OWNED BY public.examples.row_id;


--
-- Name: jobs; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.jobs (
    id character varying(64) NOT NULL,
    kind character varying(64) NOT NULL,
    task_name character varying(64),
    status character varying(16) NOT NULL,
    progress double precision NOT NULL,
    result json,
    error json,
    created_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL
);


--
-- Name: service_settings; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.service_settings (
    key character varying(64) NOT NULL,
    value text NOT NULL
);


--
-- Name: tasks; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.tasks (
    id integer NOT NULL,
    name character varying(64) NOT NULL,
    labels json NOT NULL,
    verbalizers json NOT NULL,
    template text NOT NULL,
    instruction text,
    separator text NOT NULL,
    default_k integer,
    pool_version integer NOT NULL,
    created_at timestamp with time zone NOT NULL
);


--
-- Name: tasks_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.tasks_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: tasks_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.tasks_id_seq OWNED BY public.tasks.id;


--
-- Name: examples row_id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.examples ALTER COLUMN row_id SET DEFAULT nextval('public.examples_row_id_seq'::regclass);


--
-- Name: tasks id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tasks ALTER COLUMN id SET DEFAULT nextval('public.tasks_id_seq'::regclass);


--
-- Data for Name: batch_items; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.batch_items VALUES ('job-220c4741e1f3488eabb503e5a7e0da71', 1, 'c1', '{"text": "second"}', NULL);
INSERT INTO public.batch_items VALUES ('job-220c4741e1f3488eabb503e5a7e0da71', 2, NULL, NULL, '{"error": {"message": "unreadable line", "code": "invalid_json"}}');
INSERT INTO public.batch_items VALUES ('job-220c4741e1f3488eabb503e5a7e0da71', 0, 'c0', '{"text": "first"}', '{"prediction": {"label": "positive"}}');


--
-- Data for Name: batches; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.batches VALUES ('job-220c4741e1f3488eabb503e5a7e0da71', 1, '{"demos": "auto", "calibration": "auto"}', 3, 2, 1, '[{"pool_version": 2, "fit": "fit-x"}]', 'replica-a');


--
-- Data for Name: controllers; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.controllers VALUES (1, '\x80046669742d626c6f62', '{"candidate_k": [0, 1], "train_size": 20, "metadata": {"model": "m"}}', '2026-12-08 03:24:11.872496+00');


--
-- Data for Name: examples; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.examples VALUES (1, 1, 'r0', '{"text": "review number 0 \u00e9 \u2713"}', 'negative', '\xc33d8a3d0f4091bd8d09b03e45ad663d3a3e93bec5c9463e3b38333f502a023f', '2026-12-08 03:24:11.811578+00', 1);
INSERT INTO public.examples VALUES (2, 1, 'r1', '{"text": "review number 1 \u00e9 \u2713"}', 'positive', '\xaf8d63be6e96ccbe508949be01ce553c42f33bbf347e8dbde96ec9be83c76cbe', '2026-12-08 03:24:11.811578+00', 1);
INSERT INTO public.examples VALUES (4, 1, 'r3', '{"text": "review number 3 \u00e9 \u2713"}', 'negative', '\x7b8ff53e076b4c3db414cabeae85fabe27d178bebc64ef3da13409bfc569e3bd', '2026-12-08 03:24:11.811578+00', 1);
INSERT INTO public.examples VALUES (5, 1, 'r4', '{"text": "review number 4 \u00e9 \u2713"}', 'positive', '\x4fbca7bd3d708e3ef521e23d052f3b3ea531acbe9e8a88bd4078ce3e28a8443f', '2026-12-08 03:24:11.811578+00', 1);
INSERT INTO public.examples VALUES (6, 1, 'r5', '{"text": "review number 5 \u00e9 \u2713"}', NULL, '\x10cdb6bea8cddb3e9f67c33eb5df623e3e95993da64fb6bdd9afd33e884d0e3f', '2026-12-08 03:24:11.811578+00', 1);
INSERT INTO public.examples VALUES (7, 1, 'r6', '{"text": "review number 6 \u00e9 \u2713"}', 'negative', '\x30631b3fa7d9e23e3b96f63d206ed0bea4b0c4ba8a7a623ebd3cdebe6150083e', '2026-12-08 03:24:11.811578+00', 1);
INSERT INTO public.examples VALUES (8, 1, 'r7', '{"text": "review number 7 \u00e9 \u2713"}', 'positive', '\xb27a223e6c8b833e1ec9dfbe021c7abe93f624be7e14ddbe675c243f92713bbe', '2026-12-08 03:24:11.811578+00', 1);
INSERT INTO public.examples VALUES (9, 1, 'r8', '{"text": "review number 8 \u00e9 \u2713"}', NULL, '\x0872d33d9a32a6bdcd71fe3e6c2ad43e3d8b4b3ed50931bf41c4853c49b85b3e', '2026-12-08 03:24:11.811578+00', 1);
INSERT INTO public.examples VALUES (10, 1, 'r9', '{"text": "review number 9 \u00e9 \u2713"}', 'negative', '\x32c9953e8b6038bed9ea073f6400c5bea86445be32818b3ec4326a3c945f153f', '2026-12-08 03:24:11.811578+00', 1);
INSERT INTO public.examples VALUES (11, 1, 'r10', '{"text": "review number 10 \u00e9 \u2713"}', 'positive', '\xf221a03d647686be0a5b20be14b6e7be53a907bf1fdf853ef1d3763e1c74093f', '2026-12-08 03:24:11.811578+00', 1);
INSERT INTO public.examples VALUES (12, 1, 'r11', '{"text": "review number 11 \u00e9 \u2713"}', NULL, '\xcaff89bed0721a3fa039d2bdecf50f3fcc4a1ebe8c8086be08b8b63dbda0bc3e', '2026-12-08 03:24:11.811578+00', 1);
INSERT INTO public.examples VALUES (13, 2, 'p0', '{"premise": "premise 0", "hypothesis": "hyp 0"}', 'not_entailment', '\x7be3803dd45b6abecc3406bf763d0cbf1133493e2511c63eac8483bd0b02d7be', '2026-12-08 03:24:11.836302+00', 1);
INSERT INTO public.examples VALUES (14, 2, 'p1', '{"premise": "premise 1", "hypothesis": "hyp 1"}', 'entailment', '\x6f2f963e9542dcbed85475be58a9553e618a41bf3fee043e231d48be1464163d', '2026-12-08 03:24:11.836302+00', 1);
INSERT INTO public.examples VALUES (15, 2, 'p2', '{"premise": "premise 2", "hypothesis": "hyp 2"}', 'not_entailment', '\x80a901bd6b17ad3d729f943e1d5ea2bee31d183f13759b3ed7a4b43efd65f93e', '2026-12-08 03:24:11.836302+00', 1);
INSERT INTO public.examples VALUES (16, 2, 'p3', '{"premise": "premise 3", "hypothesis": "hyp 3"}', 'entailment', '\xf498a33ee654af3e813cfb3c362f14bf7c6960bdded79fbe01c413bf28bed63d', '2026-12-08 03:24:11.836302+00', 1);
INSERT INTO public.examples VALUES (17, 2, 'p4', '{"premise": "premise 4", "hypothesis": "hyp 4"}', 'not_entailment', '\x5c1878be75afe0be8c90e3be7641ea3d0e831c3ec144103fcf4cc2bbae4fe33e', '2026-12-08 03:24:11.836302+00', 1);
INSERT INTO public.examples VALUES (18, 2, 'p5', '{"premise": "premise 5", "hypothesis": "hyp 5"}', 'entailment', '\xbebdd83e84c6b13ef5cb36bf5ee9bd3e3cf9d13d2100033ee383e53dc1a4ec3d', '2026-12-08 03:24:11.836302+00', 1);
INSERT INTO public.examples VALUES (3, 1, 'r2', '{"text": "review number 2 \u00e9 \u2713"}', 'positive', '\xe99489bec9e91fbe1d1c503e59c4033fb7f781bd52b62c3f1527a8bee7b6313e', '2026-12-08 03:24:11.811578+00', 2);


--
-- Data for Name: jobs; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.jobs VALUES ('job-70027c0836944cdf929d946ea98c9809', 'controller', 'reviews', 'succeeded', 1, '{"ok": true}', NULL, '2026-12-08 03:24:11.898938+00', '2026-12-08 03:24:11.903125+00');
INSERT INTO public.jobs VALUES ('job-fc926900d3d243f0b3c6b9aee84062d9', 'annotation', 'reviews', 'failed', 0, NULL, '{"message": "boom", "type": "RuntimeError"}', '2026-12-08 03:24:11.915499+00', '2026-12-08 03:24:11.917024+00');
INSERT INTO public.jobs VALUES ('job-220c4741e1f3488eabb503e5a7e0da71', 'batch', 'reviews', 'cancelled', 0.3333333333333333, NULL, NULL, '2026-12-08 03:24:11.922899+00', '2026-12-08 03:24:11.971681+00');


--
-- Data for Name: service_settings; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.service_settings VALUES ('embedder', 'sentence-transformers/all-MiniLM-L6-v2');


--
-- Data for Name: tasks; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.tasks VALUES (2, 'pairs', '["entailment", "not_entailment"]', '{"entailment": "entailment", "not_entailment": "not_entailment"}', 'Premise: {premise}
Hypothesis: {hypothesis}
Label: {label}', NULL, '

', NULL, 1, '2026-12-08 03:24:11.767038+00');
INSERT INTO public.tasks VALUES (1, 'reviews', '["negative", "positive"]', '{"negative": "bad", "positive": "good"}', 'Review: {text}
Sentiment: {label}', 'Classify the review.', '

', 4, 2, '2026-12-08 03:24:11.727698+00');


--
-- Name: examples_row_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.examples_row_id_seq', 18, true);


--
-- Name: tasks_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.tasks_id_seq', 2, true);


--
-- Name: batch_items batch_items_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.batch_items
    ADD CONSTRAINT batch_items_pkey PRIMARY KEY (job_id, "position");


--
-- Name: batches batches_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.batches
    ADD CONSTRAINT batches_pkey PRIMARY KEY (job_id);


--
-- Name: controllers controllers_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.controllers
    ADD CONSTRAINT controllers_pkey PRIMARY KEY (task_id);


--
-- Name: examples examples_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.examples
    ADD CONSTRAINT examples_pkey PRIMARY KEY (row_id);


--
-- Name: examples examples_task_id_example_id_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.examples
    ADD CONSTRAINT examples_task_id_example_id_key UNIQUE (task_id, example_id);


--
-- Name: jobs jobs_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.jobs
    ADD CONSTRAINT jobs_pkey PRIMARY KEY (id);


--
-- Name: service_settings service_settings_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.service_settings
    ADD CONSTRAINT service_settings_pkey PRIMARY KEY (key);


--
-- Name: tasks tasks_name_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tasks
    ADD CONSTRAINT tasks_name_key UNIQUE (name);


--
-- Name: tasks tasks_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tasks
    ADD CONSTRAINT tasks_pkey PRIMARY KEY (id);


--
-- Name: examples_task_changed; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX examples_task_changed ON public.examples USING btree (task_id, changed_version);


--
-- Name: ix_examples_task_id; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_examples_task_id ON public.examples USING btree (task_id);


--
-- Name: one_unfinished_exclusive_job; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX one_unfinished_exclusive_job ON public.jobs USING btree (kind, task_name) WHERE (((kind)::text = 'controller'::text) AND ((status)::text = ANY ((ARRAY['queued'::character varying, 'running'::character varying])::text[])));


--
-- Name: batch_items batch_items_job_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.batch_items
    ADD CONSTRAINT batch_items_job_id_fkey FOREIGN KEY (job_id) REFERENCES public.batches(job_id) ON DELETE CASCADE;


--
-- Name: batches batches_job_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.batches
    ADD CONSTRAINT batches_job_id_fkey FOREIGN KEY (job_id) REFERENCES public.jobs(id) ON DELETE CASCADE;


--
-- Name: controllers controllers_task_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.controllers
    ADD CONSTRAINT controllers_task_id_fkey FOREIGN KEY (task_id) REFERENCES public.tasks(id) ON DELETE CASCADE;


--
-- Name: examples examples_task_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.examples
    ADD CONSTRAINT examples_task_id_fkey FOREIGN KEY (task_id) REFERENCES public.tasks(id) ON DELETE CASCADE;


--
-- PostgreSQL database dump complete
--


