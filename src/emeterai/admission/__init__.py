"""Admission control: the waiting room in front of stamping, purchase and registration.

DESIGN.md flow 4 and docs/admission.md. A waiting user holds a signed ticket and costs no
database row; the line is two counters per lane in a shared store; the outflow follows
the capacity each process measures.
"""

from emeterai.admission.settings import AdmissionSettings
from emeterai.admission.tickets import LANE_NEW, LANE_PAID, LANE_PROGRESS, LANES, Ticket, TicketKeys

__all__ = [
    "LANES",
    "LANE_NEW",
    "LANE_PAID",
    "LANE_PROGRESS",
    "AdmissionSettings",
    "Ticket",
    "TicketKeys",
]
