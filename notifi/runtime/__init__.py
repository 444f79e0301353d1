"""The actor runtime: mailboxes, actors and the supervisor that restarts them."""

from notifi.runtime.actor import Actor
from notifi.runtime.mailbox import Mailbox, MailboxFull, Stopped
from notifi.runtime.supervisor import ChildSpec, Outcome, Restart, Supervisor

__all__ = [
    "Actor",
    "ChildSpec",
    "Mailbox",
    "MailboxFull",
    "Outcome",
    "Restart",
    "Stopped",
    "Supervisor",
]
