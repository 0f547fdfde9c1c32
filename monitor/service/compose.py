"""What ``mailmon serve`` runs, built from the config: sources, scheduler, HTTP app.

    service = Service(config, store, hook_token=token)   # everything built, nothing started
    service.start()                                        # the scheduler, the log follower
    ...serve service.app...
    service.stop()

Building is separate from starting so that every configuration mistake (an unknown
webhook provider, a job's bad cron line) stops ``serve`` before it follows a log,
runs a job or says that it is serving.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from prometheus_client import disable_created_metrics
from starlette.applications import Starlette

from monitor.config import Config
from monitor.driver import Driver
from monitor.gauges import DomainLabeler, IpLabeler
from monitor.jobs import Scheduler, builtin
from monitor.metrics import Metrics
from monitor.pipeline import Pipeline
from monitor.providers import ProviderResolver, resolver_for
from monitor.rollup.configured import engine_for
from monitor.service.app import create_app
from monitor.service.follow import Follower
from monitor.service.webhooks import webhook_endpoints
from monitor.store import Store

if TYPE_CHECKING:
    from monitor.collectors.mailbox.imap import MailboxReader

__all__ = ["Service", "metrics_for"]

log = logging.getLogger(__name__)


def metrics_for(config: Config, store: Store) -> Metrics:
    """The service's metrics, with the label bounds of ``[metrics]``."""
    # A `_created` series per counter would double what every scrape carries, to tell what
    # a drop to zero already tells rate(): the counters restarted with the process.
    disable_created_metrics()
    m = config.metrics
    return Metrics(
        labeler=DomainLabeler(m.domains, store.top_domains(m.top_domains)),
        ips=IpLabeler(m.sending_ips, m.top_sending_ips),
        sender_domains=IpLabeler(m.sender_domains, m.top_sender_domains),
        streams=IpLabeler(m.streams, m.top_streams),
    )


class Service:
    """The sources (followed logs, HTTP endpoints), the scheduled jobs and the app."""

    def __init__(self, config: Config, store: Store, *, hook_token: str | None = None,
                 api_token: str | None = None) -> None:  # fmt: skip
        self.config = config
        self.store = store
        self.metrics = metrics_for(config, store)
        self.stop_event = threading.Event()
        # Two pipelines: the follower's batches and the HTTP requests' must not wait for
        # each other (a request is answered once its own events are stored).
        self.pipeline = self._pipeline(resolver_for(config, store))
        # Its writes go through a process of their own: committing takes the GIL from the
        # event loop for ~a third of a request's CPU otherwise (monitor.store.process).
        self.http_pipeline = self._pipeline(resolver_for(config, store), writer_process=True)
        self.follower = Follower(config.logs, self.pipeline, self.metrics, stop=self.stop_event,
                                 instance=config.service.instance)  # fmt: skip
        engine = engine_for(config, store, gauges=self.metrics.rollup)
        # Each job that stores gets a pipeline of its own: jobs run on scheduler threads
        # beside the follower and each other (a probe run waits minutes for its mailboxes).
        self.job_pipelines: list[Pipeline] = []
        work = {
            "rollup": builtin.rollup(config, store, engine),
            "top_domains": builtin.top_domains(config, store, self.metrics.labeler),
            "dmarc_reports": builtin.dmarc_reports(config, self._job_driver()),
            "dmarc_imap": builtin.dmarc_imap(config, self._job_driver()),
            "weekly_report": builtin.weekly_report(config, store),
            "seed_probes": builtin.seed_probes(config, self._job_driver(), store, self.stop_event),
            "dns_check": builtin.dns_check(config, self._job_driver()),
        }
        self.scheduler = Scheduler(store.engine, builtin.jobs_for(config, work),
                                   metrics=self.metrics, instance=config.service.instance)
        self.app: Starlette = create_app(
            self.metrics, health=self.follower.health, pipeline=self.http_pipeline, store=store,
            endpoints=webhook_endpoints(config, self.http_pipeline, self.metrics),
            hook_token=hook_token, hook_username=config.service.hook_username,
            max_body_bytes=config.service.max_body_bytes,
            api_token=api_token, protect_metrics=config.api.protect_metrics,
            send=config.send if config.send.from_address else None,
        )  # fmt: skip
        self._thread: threading.Thread | None = None
        self._mailboxes = self._mailbox_readers()
        self._mailbox_threads: list[threading.Thread] = []

    def _job_driver(self) -> Driver:
        pipeline = self._pipeline(resolver_for(self.config, self.store))
        self.job_pipelines.append(pipeline)
        return Driver(pipeline, self.metrics)

    def _pipeline(self, resolver: ProviderResolver, *, writer_process: bool = False) -> Pipeline:
        return Pipeline(self.store, resolver=resolver, metrics=self.metrics,
                        batch_size=self.config.database.batch_size,
                        max_future_seconds=self.config.ingest.max_future_seconds,
                        writer_process=writer_process)  # fmt: skip

    def _mailbox_readers(self) -> list[MailboxReader]:
        """A reader per ``[[mailboxes]]`` entry, each with its own pipeline (its own thread)."""
        from monitor.collectors.mailbox import reader_for

        readers: list[MailboxReader] = []
        self.forwarder = None
        if self.config.forward.url and self.config.mailboxes:
            from monitor.forward import Forwarder

            self.forwarder = Forwarder(self.config.forward, self.store)
        for settings in self.config.mailboxes:
            settings.password()  # a missing secret stops serve before it starts
            pipeline = self._pipeline(resolver_for(self.config, self.store))
            if self.forwarder is not None:
                pipeline.on_write = self.forwarder.offer
            readers.append(reader_for(settings, Driver(pipeline, self.metrics)))
        return readers

    def start(self) -> None:
        # Its lines per job and run say nothing the job state does not; its warnings (a run
        # skipped while the last one still runs, a run missed) still show.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        self.http_pipeline.start_writer()  # its process imports while the rest starts
        self.scheduler.start()  # before the follower, whose first poll calls on it
        if self.config.logs:
            self._thread = threading.Thread(target=self.follower.run, name="mailmon-follow",
                                            args=(self._first_poll,), daemon=True)  # fmt: skip
            self._thread.start()
        for reader in self._mailboxes:
            thread = threading.Thread(target=reader.watch, args=(self.stop_event,),
                                      name=f"mailmon-mailbox-{reader.settings.name}",
                                      daemon=True)  # fmt: skip
            thread.start()
            self._mailbox_threads.append(thread)

    def _first_poll(self) -> None:
        if "top_domains" in self.scheduler.jobs:
            self.scheduler.run_now("top_domains")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop following and scheduling; store what is pending."""
        self.stop_event.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=timeout)
        for thread in self._mailbox_threads:
            thread.join(timeout=timeout)
        self.scheduler.stop(timeout=timeout)
        for reader in self._mailboxes:
            reader.driver.pipeline.flush()
        if self.forwarder is not None:
            self.forwarder.close()
        self.pipeline.flush()
        self.http_pipeline.close()
        for pipeline in self.job_pipelines:
            pipeline.flush()
