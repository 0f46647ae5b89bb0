//! Bootstrap of the OpenMeter catalog (meters, features, default plan).
