"""ESP webhook collectors: one module per provider, each a :class:`~.base.Webhook`."""

from monitor.collectors.esp import brevo as brevo
from monitor.collectors.esp import mailgun as mailgun
from monitor.collectors.esp import postmark as postmark
from monitor.collectors.esp import resend as resend
from monitor.collectors.esp import sendgrid as sendgrid
from monitor.collectors.esp import ses as ses
from monitor.collectors.esp import sparkpost as sparkpost
