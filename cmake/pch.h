// The precompiled header: the heavy, stable headers nearly every file includes.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <string>
#include <vector>
